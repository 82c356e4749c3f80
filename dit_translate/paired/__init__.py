"""Paired image-to-image translation: a CLIP-conditioned DiT (docs/methods.md §6) and a pix2pix baseline.

Modules: ``config`` (validated preset tables), ``dit`` (the model), ``pix2pix`` (the GAN baseline and
its training recipe), ``data`` (paired folders), ``encoders`` (VAE codec, CLIP image tower),
``checkpoint`` (training state and checkpoint folders), ``recipe`` (what the loop needs from a model
kind), ``train`` (the loop and the DiT recipe), ``translate`` (sampling) and ``evaluate``. Nothing is
imported here, so reading a preset loads no models.
"""
