"""Every LoRA concern in one package (as torchtune's `modules/peft/`), used by the train, generate and evaluate stages.

* `format` -- `lora.safetensors`: kolora's LoRA file (peft keys + rank/alpha/fingerprint metadata), read and written
* `merge`  -- merging a LoRA into a base UNet at the trained strength (the only merge path)
* `export` -- the diffusers and kohya/ComfyUI files written beside it, and reading them back
* `header` -- safetensors headers without torch: metadata and the content hash that is a release's identity
"""
