"""The pipeline's stages and their shared runtime (options, device/dtype, files, tracking)."""
