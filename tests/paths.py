"""Where the shared data lies: ../shared/datasets beside the repository (never copied into it)."""
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED_DATASETS = REPO.parent / "shared" / "datasets"
