"""Paired image-to-image translation: a CLIP-conditioned DiT (methods.md section 1) and a pix2pix baseline.

Modules: ``config`` (validated preset tables), ``dit`` (the model), ``pix2pix`` (the GAN baseline),
``data`` (paired folders), ``encoders`` (VAE codec, CLIP image tower), ``checkpoint`` (training state
and the checkpoint folder), ``train``, ``translate`` and ``evaluate``. Nothing is imported here so that
reading a preset does not load torch.
"""
