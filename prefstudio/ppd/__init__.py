"""PPD (seed 002): personalized preference fine-tuning of diffusion models.

    vlm_profile  a VLM reads 4 judged pairs, writes a profile; its final token's hidden state is the user embedding
    adapter      decoupled cross-attention (IP-Adapter processors) in an SD/SDXL UNet, fed by a user embedding
    dpo          Diffusion-DPO with user conditioning (002 eq. 6)
    data         pairs with per-user histories, ties, synthetic one-hot reward users (002 §5.1)
    training     the accelerate training loop, checkpoints and logs
    judge        VLM as judge with both image orders (002 app. B.3), win rates
"""
