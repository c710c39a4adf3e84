"""How far the generator's starting flow alone gets: held-out self-reenactment with the network's
learned head silenced, for each ``flow_init`` (the exact face flow, the sparse prior points'),
against copying the source. Prints a table (L1 and dlib identity distance to the target crop).

    faceanime prepare ../shared/data/videos/d18.mp4 -o /tmp/pgfg_d18 --crop-size 128
    python tools/pgfg_flow_starts.py /tmp/pgfg_d18 d18 --model ../shared/data/sfm/sfm_shape_3448.bin
"""

from __future__ import annotations

import argparse

import torch

from faceanime.identity import load_embedder
from faceanime.morphable import load_model
from faceanime.pgfg import Generator, GeneratorConfig
from faceanime.pgfg.data import load_video_pairs, make_batch
from faceanime.pgfg.train import image_metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dataset", help="a 'faceanime prepare' folder with crops")
    parser.add_argument("video", help="the video's stem; source = its first usable frame")
    parser.add_argument("--model", default="sfm")
    parser.add_argument("--batch", type=int, default=16)
    args = parser.parse_args()
    model = load_model(args.model)
    video = load_video_pairs(args.dataset, args.video, model, stride=4)
    frames = video.frames.tolist()
    pairs = [(0, frames[0], t) for t in frames[1:]]
    embedder = load_embedder("torch", "cpu")
    sums: dict[str, list[float]] = {}
    for i in range(0, len(pairs), args.batch):
        batch = make_batch([video], pairs[i:i + args.batch], 1.0, True, flow_channel=True,
                           triangles=model.triangles)
        outputs = {"copy the source": batch.source}
        for start in ("sparse", "dense"):
            torch.manual_seed(0)
            net = Generator(GeneratorConfig(flow_init=start))
            with torch.no_grad():
                net.decoder.head[1].weight.zero_()  # the start alone
                outputs[f"start {start}"] = net.generate(batch.source, batch.p_s, batch.p_t,
                                                         flow=batch.flow)
        for name, images in outputs.items():
            m = image_metrics(images, batch.target, batch.landmarks, embedder)
            total = sums.setdefault(name, [0.0, 0.0])
            total[0] += m["l1"] * len(images)
            total[1] += m["identity"] * len(images)
    print(f"{args.video}: {len(pairs)} held-out pairs, source frame {frames[0]}\n")
    print("| method | L1 ↓ | identity distance ↓ |\n|---|---:|---:|")
    for name, (l1, identity) in sums.items():
        print(f"| {name} | {l1 / len(pairs):.4f} | {identity / len(pairs):.3f} |")


if __name__ == "__main__":
    main()
