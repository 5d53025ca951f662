"""Autoencoder hyperparameters: edit the values here, or override one per run with NAME=VALUE."""

# data
DATASET_NAME = "MNIST"  # MNIST, FASHIONMNIST, PAINTINGS, POKEMON, or FOLDER for your own images in DATASET_PATH
DATASET_PATH = None  # folder of your images for DATASET_NAME="FOLDER" (flat, or one subfolder per class), relative to the working directory unless absolute
RESIZE_POLICY = "auto"  # non-square images: "crop" keeps the centre square, "pad" adds BACKGROUND_COLOR borders; "auto" pads POKEMON and crops PAINTINGS and FOLDER
BACKGROUND_COLOR = "white"  # colour under transparent pixels and of padding: a name, "#rrggbb" or an (R, G, B) tuple
IMAGE_SIZE = 32  # side of the square training images, in pixels: 32 or 64
IMAGE_CHANNELS = None  # 1 (grayscale) or 3 (RGB); None keeps the dataset's own channel count
MAX_TRAIN_IMAGES = None  # None trains on the whole training set; an integer keeps only the first N images
MAX_TEST_IMAGES = None  # None evaluates on the whole test split; an integer keeps only the first N images

# networks
CODE_SIZE = 16  # numbers in the code between encoder and decoder
COMPLEXITY = 16  # feature maps of the widest-resolution hidden layer; deeper layers double it
WEIGHTS_MEAN = 0.0  # mean of the normal initialisation of convolution weights
WEIGHTS_STD = 0.05  # its standard deviation; 0.05 learned faster than DCGAN's 0.02 in short MNIST runs

# training
NB_EPOCH = 10  # passes over the training set
MINIBATCH_SIZE = 64  # images per iteration
LEARNING_RATE = 0.001  # Adam learning rate

# run
NB_IMAGE_TO_GENERATE = 8  # grids show NB_IMAGE_TO_GENERATE x NB_IMAGE_TO_GENERATE images
SEED = 0  # seed of every random generator; None picks a fresh one each run
METRICS_SAMPLES = 10_000  # samples and test images compared by the quality metrics (see the README); 0 turns them off
METRICS_EVERY = 0  # also measure every N epochs; 0 measures only after the last epoch
DEVICE = "auto"  # "auto" (CUDA, then Apple MPS, then CPU), or one device such as "cpu" or "cuda:1"
PRECISION = "auto"  # "bf16" computes convolutions in bfloat16 (weights and losses stay fp32), "fp32" does not; "auto" picks bf16 where the CPU or GPU has bf16 hardware
