"""Moving MNIST video prediction: read 10 frames, forecast the next 10.

    python -m experiments.moving_mnist --config=configs/moving_mnist.py --workdir=/tmp/mmnist
"""

from rnnvision.train import cli

if __name__ == "__main__":
    cli.main("moving_mnist")
