"""lvm_jax: Mamba latent-vector models that predict the next sentence embedding."""

__version__ = "0.1.0"
