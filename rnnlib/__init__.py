"""rnnlib: the small library behind the course book *Recurrent Neural Networks with PyTorch*."""
from .config import get_device, is_quick, mode, pick, set_seed

__version__ = "0.1.0"
