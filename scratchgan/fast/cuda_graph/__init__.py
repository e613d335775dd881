"""Experimental: the MLP GAN's whole training step as one CUDA graph (``--cuda-graph``). It has not yet run on
a GPU. graph.py captures and replays the step; fixed.py is the step's maths into fixed buffers; gemm.py its
SGEMM kernels (CuPy refuses cuBLAS while capturing)."""
