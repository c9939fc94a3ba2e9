import sys
from pathlib import Path

# test helpers (archive_factory, published_recipe) import as plain modules
sys.path.insert(0, str(Path(__file__).parent))
