"""PixelRNN: binarised MNIST (or CIFAR-10) modelled pixel by pixel, exact NLL, samples.

    python -m experiments.pixel_rnn --config=configs/pixel_rnn.py --workdir=/tmp/pixel_rnn
"""

from rnnvision.train import cli

if __name__ == "__main__":
    cli.main("pixel_rnn")
