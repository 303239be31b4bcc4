"""Image captioning with attention (Show, Attend and Tell) on digit scenes or COCO.

    python -m experiments.captioning --config=configs/captioning.py --workdir=/tmp/captioning
"""

from rnnvision.train import cli

if __name__ == "__main__":
    cli.main("captioning")
