"""SNR-selected fast training: estimate a frame's SNR, then train and pick models by SNR."""
