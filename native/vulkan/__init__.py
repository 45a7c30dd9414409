"""The Vulkan backend's device layer (api, device) and its kernels: GLSL sources in shaders/, shipped SPIR-V in spirv/."""
