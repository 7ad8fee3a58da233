import torch
import torch.nn.functional as F

from reprlab.augment.basic import random_crop, random_flip


def test_each_crop_is_a_window_of_the_padded_image_and_offsets_vary():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (64, 3, 8, 8), dtype=torch.uint8)
    out = random_crop(x, 2, g)
    padded = F.pad(x, (2, 2, 2, 2))
    offsets = []
    for i in range(len(x)):
        hits = [(dy, dx) for dy in range(5) for dx in range(5) if torch.equal(padded[i, :, dy : dy + 8, dx : dx + 8], out[i])]
        assert hits, f"sample {i} is not a crop of its padded image"
        offsets.append(hits[0])
    assert len(set(offsets)) > 10  # per-sample offsets, not one for the batch


def test_flip_is_per_sample_and_exact():
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, 256, (200, 3, 4, 5), dtype=torch.uint8)
    out = random_flip(x, g)
    flipped = torch.tensor([torch.equal(o, xi.flip(2)) and not torch.equal(o, xi) for o, xi in zip(out, x)])
    same = torch.tensor([torch.equal(o, xi) for o, xi in zip(out, x)])
    assert (flipped | same).all()
    assert 60 < int(flipped.sum()) < 140
