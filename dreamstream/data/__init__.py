"""Datasets: the RecBole atomic-file reader, the synthetic generator, the split protocol and ranking metrics.

numpy only, so the replay tool and the stream worker's side can import it without torch.
"""
from dreamstream.data.metrics import KS, full_sort_topk, popularity_topk, topk_metrics
from dreamstream.data.recbole import Dataset, DatasetError, load_dataset
from dreamstream.data.split import Split, global_time_split, leave_last_out

__all__ = [
    "KS", "Dataset", "DatasetError", "Split", "full_sort_topk", "global_time_split", "leave_last_out",
    "load_dataset", "popularity_topk", "topk_metrics",
]
