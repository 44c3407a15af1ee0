"""InstructPix2Pix, step by step: the library behind the notebooks.

Each paper step is a module or subpackage (see README.md, "Layout"):
`toyworld` (the miniature world), `surgery` (§3.2 conv_in widening), `guidance`
(§3.2.1 two-conditioning classifier-free guidance and the editor), and the rest as
later steps land. Heavy dependencies (torch, diffusers) are imported by the modules that
need them, so `import ip2p_lib` stays fast.
"""

__version__ = "0.1.0"
