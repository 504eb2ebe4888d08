"""User-study arena: anonymous side-by-side ranking of systems, kept without loss, with the paper's statistics.

`Study` (service.py) is the server side; `StudyConfig`/`SystemSpec` (config.py) its settings; `VoteStore`
(store.py) SQLite + journal; `TokenSigner`/`RateLimiter` (tokens.py); `BalancedScheduler` (schedule.py);
`Pool` (pool.py) the random-named clips; `compute_stats`/`format_table`/`plot_stats` (stats.py).
The Gradio tabs are in videossm/ui/arena.py; the CLI is `python -m videossm study ...` (cli.py).
"""

from .config import StudyConfig, SystemSpec
from .service import AdminError, IssuedComparison, Study, VoteRejected, VoteResult

__all__ = ["AdminError", "IssuedComparison", "Study", "StudyConfig", "SystemSpec", "VoteRejected", "VoteResult"]
