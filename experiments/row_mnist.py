"""Sequential MNIST: classify digits read one row (or pixel) at a time.

    python -m experiments.row_mnist --config=configs/row_mnist.py --workdir=/tmp/row_mnist
"""

from rnnvision.train import cli

if __name__ == "__main__":
    cli.main("row_mnist")
