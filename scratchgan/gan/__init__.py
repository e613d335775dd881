"""The GAN on the engine: what a GAN is made of, with no command line and no run folder.

- step.py: ``GANStep`` (a D step, then a G step), the noise source and Dropout's draws, ``generate``
- objectives.py, gradient_penalty.py: the five objectives; WGAN-GP's and R1's penalties
- ema.py, diffaugment.py: the generator's moving average; differentiable augmentation
- models.py: the builders (MLP GAN, DCGAN, conditional), from a config dict
- presets.py: named recipes of settings, chosen by measurement
- checkpoint_schema.py, generator_file.py: what a GAN checkpoint may hold; a trained generator from its file
- latent.py: latent walks (slerp) and the truncation trick
"""
