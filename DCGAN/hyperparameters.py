"""DCGAN hyperparameters: edit the values here, or override one per run with NAME=VALUE."""

# data
DATASET_NAME = "MNIST"  # MNIST, FASHIONMNIST, PAINTINGS, POKEMON, or FOLDER for your own images in DATASET_PATH
DATASET_PATH = None  # folder of your images for DATASET_NAME="FOLDER" (flat, or one subfolder per class), relative to the working directory unless absolute
RESIZE_POLICY = "auto"  # non-square images: "crop" keeps the centre square, "pad" adds BACKGROUND_COLOR borders; "auto" pads POKEMON and crops PAINTINGS and FOLDER
BACKGROUND_COLOR = "white"  # colour under transparent pixels and of padding: a name, "#rrggbb" or an (R, G, B) tuple
IMAGE_SIZE = 32  # side of the square training images, in pixels: 32 or 64
IMAGE_CHANNELS = None  # 1 (grayscale) or 3 (RGB); None keeps the dataset's own count: 1 for MNIST and Fashion-MNIST, 3 for image folders
MAX_TRAIN_IMAGES = None  # None trains on the whole training set; an integer keeps only the first N images

# networks
LATENT_INPUT = 100  # size of the generator's latent vector z
COMPLEXITY = 32  # feature maps of the widest-resolution hidden layer; deeper layers double it
DROPOUT_PROB = 0.0  # dropout probability after each hidden generator layer, in [0, 1)
WEIGHTS_MEAN = 0.0  # mean of the normal initialisation of convolution weights
WEIGHTS_STD = 0.02  # standard deviation of the normal initialisation (0.02 in Radford et al. 2015)

# training
NB_EPOCH = 10  # passes over the training set
MINIBATCH_SIZE = 64  # real images per iteration
LEARNING_RATE = 0.0002  # Adam learning rate of both networks
BETA1 = 0.5  # Adam beta1, in [0, 1)
BETA2 = 0.999  # Adam beta2, in [0, 1)
NB_DISCRIMINATOR_STEP = 1  # discriminator updates per iteration, each on fresh generated images
NB_GENERATOR_STEP = 1  # generator updates per iteration, after the discriminator's
PACKING = 1  # samples packed into one discriminator input (PacGAN); 1 disables packing
REAL_LABEL_SMOOTHING = False  # True draws real targets uniformly from [0.7, 1] instead of 1
FAKE_LABEL_SMOOTHING = False  # True draws fake targets uniformly from [0, 0.3] instead of 0

# run
NB_IMAGE_TO_GENERATE = 8  # sample grids are NB_IMAGE_TO_GENERATE x NB_IMAGE_TO_GENERATE images
SEED = 0  # seed of every random generator; None picks a fresh one each run
METRICS_SAMPLES = 10_000  # samples and test images compared by the quality metrics (see the README); 0 turns them off
METRICS_EVERY = 0  # also measure every N epochs; 0 measures only after the last epoch
DEVICE = "auto"  # "auto" (CUDA, then Apple MPS, then CPU), or one device such as "cpu" or "cuda:1"
PRECISION = "auto"  # "bf16" computes convolutions in bfloat16 (weights and losses stay fp32), "fp32" does not; "auto" picks bf16 where the CPU or GPU has bf16 hardware
