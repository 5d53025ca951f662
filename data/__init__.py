"""Obtain MNIST and Fashion-MNIST in torchvision's raw layout inside this folder."""
