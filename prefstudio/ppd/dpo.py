"""Diffusion-DPO with user conditioning (002 eq. 6).

    L = −E log σ(−β T ω(λ_t) Δ),
    Δ = ‖ε⁺ − ε_θ(x_t⁺, c, u, t)‖² − ‖ε⁺ − ε_ref(x_t⁺, c, t)‖² − (‖ε⁻ − ε_θ(x_t⁻, c, u, t)‖² − ‖ε⁻ − ε_ref(x_t⁻, c, t)‖²)

with ω(λ_t) = 1 and the squared errors averaged over latent elements, as the released
Diffusion-DPO code does (so β is on the same footing for every resolution). The liked and
disliked latents share one t and one ε. The policy is the base UNet with the user adapter at
scale 1; the reference is the same UNet with the adapter at scale 0, which is the frozen base
model exactly (adapter.py), so no second copy of the UNet is kept.

A tie (the person judged both orders, or a synthetic user's rewards are equal) has no
preferred side: its loss is −½(log σ(x) + log σ(−x)), the DPO loss of both orders averaged,
which is smallest when the model keeps the two images' likelihood ratio equal to the
reference's. Ties do not count in the implicit accuracy.
"""
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class DPOOutput:
    loss: torch.Tensor  # scalar, mean over the batch
    margin: torch.Tensor  # [B] −βTΔ: > 0 when the policy prefers the liked image more than the reference does
    implicit_accuracy: torch.Tensor  # scalar over non-tie pairs: share with margin > 0, a margin of 0 counting ½
    decided: int  # pairs that are not ties


def dpo_loss(model_err_liked: torch.Tensor, model_err_disliked: torch.Tensor,
             ref_err_liked: torch.Tensor, ref_err_disliked: torch.Tensor,
             beta_t: float, tie: torch.Tensor | None = None) -> DPOOutput:
    """Eq. 6 from per-pair squared denoising errors [B]; `beta_t` is β·T; `tie` [B] bool."""
    delta = (model_err_liked - ref_err_liked) - (model_err_disliked - ref_err_disliked)
    margin = -beta_t * delta
    decided_loss = -F.logsigmoid(margin)
    if tie is None:
        tie = torch.zeros_like(margin, dtype=torch.bool)
    tie_loss = -0.5 * (F.logsigmoid(margin) + F.logsigmoid(-margin))
    loss = torch.where(tie, tie_loss, decided_loss).mean()
    decided = ~tie
    hits = (margin > 0).float() + 0.5 * (margin == 0).float()
    n = int(decided.sum())
    accuracy = hits[decided].mean() if n else torch.tensor(float("nan"))
    return DPOOutput(loss, margin.detach(), accuracy.detach(), n)


def noise_target(scheduler, latents: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """What the UNet predicts: ε, or v for v-prediction models."""
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        return noise
    if kind == "v_prediction":
        return scheduler.get_velocity(latents, noise, t)
    raise ValueError(f"prediction type {kind!r} is not one Diffusion-DPO here trains (epsilon, v_prediction)")


class ConditionedDenoiser(nn.Module):
    """Base UNet (frozen) + user adapter, computing the four errors of eq. 6 in one forward
    so that `accelerate`/DDP sees one module whose only trainable parameters are the adapter's."""

    def __init__(self, unet, adapter, scheduler):
        super().__init__()
        self.unet = unet.requires_grad_(False)
        self.adapter = adapter
        self.scheduler = scheduler
        adapter.install(unet)

    def forward(self, latents_liked, latents_disliked, text_embeds, user, added_cond=None,
                noise=None, timesteps=None):
        """-> (model_err_liked, model_err_disliked, ref_err_liked, ref_err_disliked), each [B].

        `user` [B, D_u] (already dropped out where wanted); `added_cond` holds SDXL's
        text_embeds/time_ids for a batch of B."""
        batch = latents_liked.shape[0]
        latents = torch.cat([latents_liked, latents_disliked])
        if noise is None:
            noise = torch.randn_like(latents_liked)
        if timesteps is None:
            timesteps = torch.randint(0, self.scheduler.config.num_train_timesteps, (batch,), device=latents.device)
        noise, timesteps = torch.cat([noise, noise]), torch.cat([timesteps, timesteps])
        noisy = self.scheduler.add_noise(latents, noise, timesteps)
        target = noise_target(self.scheduler, latents, noise, timesteps)
        text = torch.cat([text_embeds, text_embeds])
        added = {k: torch.cat([v, v]) for k, v in (added_cond or {}).items()}
        added["image_embeds"] = self.adapter.image_embeds(torch.cat([user, user]))
        dtype = self.unet.dtype

        def errors(prediction):
            per_element = (prediction.float() - target.float()) ** 2
            err = per_element.mean(dim=tuple(range(1, per_element.ndim)))
            return err[:batch], err[batch:]

        scale = self.adapter.scale
        with torch.no_grad():
            self.adapter.set_scale(0.0)
            try:
                ref = self.unet(noisy.to(dtype), timesteps, encoder_hidden_states=text.to(dtype),
                                added_cond_kwargs=added).sample
            finally:
                self.adapter.set_scale(scale)
        model = self.unet(noisy.to(dtype), timesteps, encoder_hidden_states=text.to(dtype),
                          added_cond_kwargs=added).sample
        return (*errors(model), *errors(ref))


def drop_users(user: torch.Tensor, probability: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """User-embedding dropout (002 §4.3): each row zeroed with `probability`; a zero embedding
    is "no user", which the trained model then also serves unconditionally."""
    if probability <= 0:
        return user
    keep = torch.rand(user.shape[0], generator=generator) >= probability
    return user * keep.to(user.device, user.dtype).unsqueeze(1)
