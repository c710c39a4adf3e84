"""The jobs, each one short module composing the stages (landmarks, fitting, motion, dynamics,
rendering), above them: no stage imports a job, no job imports another.

- :mod:`faceanime.jobs.retarget` — a photo's face makes a driving video's motions;
- :mod:`faceanime.jobs.predict` — a photo's face moves as a 3DDP model predicts;
- :mod:`faceanime.jobs.animate` — photo A's face moves into photo B's pose and expression;
- :mod:`faceanime.jobs.swap` — a photo's face on every frame of a target video;
- :mod:`faceanime.jobs.common` — what they share: the photo and the driver fitted, the renderer,
  streaming output with provenance, runs over many sources.

Each job is also a function of the package: ``faceanime.retarget(...)`` and so on.
"""
