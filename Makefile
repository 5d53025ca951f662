# make demo: create .venv, fetch MNIST and train DCGAN briefly. make test: run the test suite.
PYTHON ?= python3
VENV := .venv
VENV_PYTHON := $(VENV)/bin/python

.PHONY: setup demo test

setup: $(VENV)/.installed

# Reinstalled whenever requirements.txt changes.
$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV_PYTHON) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

demo: setup
	$(VENV_PYTHON) -m data.fetch mnist
	cd DCGAN && ../$(VENV_PYTHON) DCGAN.py NB_EPOCH=4 MAX_TRAIN_IMAGES=20000

test: setup
	$(VENV_PYTHON) -m pytest
