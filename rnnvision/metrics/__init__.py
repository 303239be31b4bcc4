"""Evaluation metrics: video frames (jax), captions (pure Python), gradients (jax).

    from rnnvision import metrics
    results = metrics.video_prediction_metrics(pred, true, context_last, mean_frame)
    results = metrics.caption_metrics(references, hypotheses)
    cos = metrics.cosine_similarity(truncated_grads, full_grads)
"""

from rnnvision.metrics.attention import attention_in_box, box_coverage
from rnnvision.metrics.captioning import bleu, caption_metrics, cider_d, cider_d_per_image
from rnnvision.metrics.gradients import (
    cosine_similarity,
    global_norm,
    largest_singular_value,
    recurrent_matrix,
    recurrent_sigma_max,
    relative_norm_error,
)
from rnnvision.metrics.image import (
    frame_mae,
    frame_mse,
    per_step_metrics,
    psnr,
    ssim,
    ssim_map,
    video_prediction_metrics,
)

__all__ = [
    "attention_in_box",
    "box_coverage",
    "bleu",
    "caption_metrics",
    "cider_d",
    "cider_d_per_image",
    "cosine_similarity",
    "frame_mae",
    "frame_mse",
    "global_norm",
    "largest_singular_value",
    "per_step_metrics",
    "psnr",
    "recurrent_matrix",
    "recurrent_sigma_max",
    "relative_norm_error",
    "ssim",
    "ssim_map",
    "video_prediction_metrics",
]
