"""Images as tokens (unit 02): patches and a ViT-style patch embedding, against a strided Conv2d."""
import pytest
import torch
from einops import rearrange
from torch import nn

from llmcourse.embeddings import PatchEmbedding, image_patches


def test_patches_are_the_pixels_in_reading_order():
    image = torch.arange(2 * 4 * 6).float().reshape(1, 2, 4, 6)       # (b, c, h, w)
    patches = image_patches(image, 2)                                 # (1, 6, 2*2*2)
    assert patches.shape == (1, 6, 8)
    top_right = image[0, :, 0:2, 4:6]                                  # (c, 2, 2): the third patch
    assert torch.equal(patches[0, 2], rearrange(top_right, "c p1 p2 -> (p1 p2 c)"))


def test_patch_embedding_equals_a_strided_convolution():
    torch.manual_seed(0)
    embed = PatchEmbedding(channels=3, image_size=32, patch_size=8, d_model=24)
    conv = nn.Conv2d(3, 24, kernel_size=8, stride=8)                  # how ViT implementations do it
    with torch.no_grad():
        conv.weight.copy_(rearrange(embed.project.weight, "d (p1 p2 c) -> d c p1 p2", p1=8, p2=8))
        conv.bias.copy_(embed.project.bias)
        embed.positions.normal_()
    images = torch.randn(5, 3, 32, 32)
    reference = rearrange(conv(images), "b d h w -> b (h w) d") + embed.positions
    assert torch.allclose(embed(images), reference, atol=1e-5)
    assert embed(images).shape == (5, 16, 24)


def test_bad_shapes_are_named():
    with pytest.raises(ValueError, match="patch_size must be"):
        image_patches(torch.zeros(1, 3, 30, 32), 8)
    with pytest.raises(ValueError, match=r"images must be \(batch"):
        image_patches(torch.zeros(3, 32, 32), 8)
