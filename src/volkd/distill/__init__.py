"""volkd.distill: KD losses by name (none, graph, hinton, sp, rkd) and the batch-graph affinities."""

from volkd.distill.graph import (
    AFFINITIES,
    feature_graph_loss,
    graph_affinity,
    logit_graph_loss,
    metric_loss,
)
from volkd.distill.losses import (
    GraphKD,
    HintonKD,
    KDLoss,
    NoKD,
    RelationalKD,
    SimilarityPreservingKD,
    combine,
    get_kd_loss,
    kd_loss_names,
    register_kd_loss,
    rkd_angle_potential,
    rkd_distance_potential,
    sp_graph,
)

__all__ = [
    "AFFINITIES",
    "GraphKD",
    "HintonKD",
    "KDLoss",
    "NoKD",
    "RelationalKD",
    "SimilarityPreservingKD",
    "combine",
    "feature_graph_loss",
    "get_kd_loss",
    "graph_affinity",
    "kd_loss_names",
    "logit_graph_loss",
    "metric_loss",
    "register_kd_loss",
    "rkd_angle_potential",
    "rkd_distance_potential",
    "sp_graph",
]
