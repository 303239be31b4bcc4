"""Video classification: recognise a digit's action in a video (CNN per frame + LSTM/GRU).

    python -m experiments.video_classification --config=configs/video_classification.py \
        --workdir=/tmp/video_cls
"""

from rnnvision.train import cli

if __name__ == "__main__":
    cli.main("video_classification")
