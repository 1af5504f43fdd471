"""big_vision_style: JAX reproductions of data-selection methods for visual training."""
