"""CUDA plumbing for the CUDA backend: ctypes bindings to the driver API (driver.py) and NVRTC
(nvrtc.py) and the kernel sources (kernels/)
compiled once per device and cached (module.py). No CUDA Python package is needed, only the driver and NVRTC."""
