"""The names of the VBench-style metrics, apart from their code, so that the CLI parser imports no torch."""

from __future__ import annotations

METRICS: dict[str, str] = {
    "subject_consistency": "VBench subject consistency: DINO ViT-B/16 features, mean of cos to previous and first frame",
    "background_consistency": "VBench background consistency: CLIP ViT-B/32 features, same formula",
    "temporal_flickering": "VBench temporal flickering: (255 - mean abs frame difference) / 255, no weights",
    "aesthetic_quality": "VBench aesthetic quality: LAION linear head on CLIP ViT-L/14, / 10",
    "dynamic_degree_dis": "VBench dynamic degree with OpenCV DIS flow instead of RAFT: fraction of dynamic clips",
}
UNAVAILABLE: dict[str, str] = {
    "imaging_quality": "MUSIQ is not computed: no maintained MUSIQ implementation installs here without "
                       "torchvision (pyiqa 0.1.16, the maintained one, requires torchvision and pulls another torch)",
}
DEFAULT_METRICS = tuple(METRICS)
