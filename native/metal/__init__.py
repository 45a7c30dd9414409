"""The Metal backend's pieces: objc.py (the Objective-C runtime through ctypes), api.py (the slice of
Metal it uses), kernels/ (MSL ports of the CUDA kernels) and library.py (their one source),
arguments.py (argument structs as bytes), device.py (MetalDevice: native/gpu.py's GpuDevice)."""
