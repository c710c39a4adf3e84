"""faceanime: 3D-prior face video generation (FaceAnime, Tu et al., TCSVT 2021).

The pipeline's stages live in sub-packages named for what they are:

- :mod:`faceanime.morphable` — 3D morphable face models (SFM, BFM) and vertex generation;
- :mod:`faceanime.landmarks` — 68-point iBUG landmarks for images and videos;
- :mod:`faceanime.io` — image and video reading/writing at the edges.
"""

__version__ = "0.1.0"
