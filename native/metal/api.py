"""The slice of the Metal API the Metal backend uses, through native/metal/objc.py: the messages with
their C signatures (as declared in the Metal framework's headers), MTLSize, the constants, and
MTLCreateSystemDefaultDevice. NSUInteger / NSInteger are 64-bit on every Mac that runs Metal 3."""

from __future__ import annotations

import ctypes
from ctypes import POINTER, c_bool, c_char_p, c_size_t, c_ssize_t, c_uint64, c_void_p

from mtprun.native.metal import objc
from mtprun.native.metal.objc import Message
from mtprun.runner.errors import MtprunError

METAL = "/System/Library/Frameworks/Metal.framework/Metal"
# Loaded for MTLCreateSystemDefaultDevice, which returns nil in a process that has not loaded it.
CORE_GRAPHICS = "/System/Library/Frameworks/CoreGraphics.framework/CoreGraphics"
NSUInteger, NSInteger = c_size_t, c_ssize_t


class MTLSize(ctypes.Structure):
    _fields_ = [("width", NSUInteger), ("height", NSUInteger), ("depth", NSUInteger)]


STORAGE_SHARED = 0  # MTLResourceStorageModeShared: CPU and GPU share the memory (Apple GPUs: unified)
USAGE_READ_WRITE = 1 | 2  # MTLResourceUsageRead | MTLResourceUsageWrite
GPU_FAMILY_APPLE7 = 1007  # MTLGPUFamilyApple7: M1 and later
GPU_FAMILY_METAL3 = 5001  # MTLGPUFamilyMetal3: gpuAddress (macOS 13 and later)
STATUS_COMPLETED = 4  # MTLCommandBufferStatusCompleted


def create_system_default_device() -> int | None:
    objc.runtime()  # off macOS: the one-line error, before any framework is looked for
    try:
        ctypes.CDLL(CORE_GRAPHICS)
        fn = ctypes.CDLL(METAL).MTLCreateSystemDefaultDevice
    except OSError as exc:
        raise MtprunError(f"{objc.NEEDS}; the Metal framework did not load ({exc}).") from None
    fn.argtypes, fn.restype = [], c_void_p
    return fn()


# MTLDevice
name = Message("name", c_void_p)
supports_family = Message("supportsFamily:", c_bool, NSInteger)
new_command_queue = Message("newCommandQueue", c_void_p)
new_buffer = Message("newBufferWithLength:options:", c_void_p, NSUInteger, NSUInteger)
new_buffer_no_copy = Message("newBufferWithBytesNoCopy:length:options:deallocator:", c_void_p, c_void_p, NSUInteger,
                             NSUInteger, c_void_p)
new_library_with_source = Message("newLibraryWithSource:options:error:", c_void_p, c_void_p, c_void_p, POINTER(c_void_p))
new_compute_pipeline = Message("newComputePipelineStateWithFunction:error:", c_void_p, c_void_p, POINTER(c_void_p))
# MTLCompileOptions
set_fast_math_enabled = Message("setFastMathEnabled:", None, c_bool)
# MTLLibrary
new_function = Message("newFunctionWithName:", c_void_p, c_void_p)
# MTLComputePipelineState
thread_execution_width = Message("threadExecutionWidth", NSUInteger)
max_total_threads = Message("maxTotalThreadsPerThreadgroup", NSUInteger)
# MTLBuffer
contents = Message("contents", c_void_p)
gpu_address = Message("gpuAddress", c_uint64)
# MTLCommandQueue: command buffers that retain nothing (the backend keeps every object alive)
command_buffer = Message("commandBufferWithUnretainedReferences", c_void_p)
# MTLCommandBuffer
compute_command_encoder = Message("computeCommandEncoder", c_void_p)  # serial: each dispatch sees the last one's writes
commit = Message("commit", None)
wait_until_completed = Message("waitUntilCompleted", None)
status = Message("status", NSUInteger)
error = Message("error", c_void_p)
# MTLComputeCommandEncoder
set_compute_pipeline_state = Message("setComputePipelineState:", None, c_void_p)
set_bytes = Message("setBytes:length:atIndex:", None, c_char_p, NSUInteger, NSUInteger)
set_threadgroup_memory_length = Message("setThreadgroupMemoryLength:atIndex:", None, NSUInteger, NSUInteger)
dispatch_threadgroups = Message("dispatchThreadgroups:threadsPerThreadgroup:", None, MTLSize, MTLSize)
use_resources = Message("useResources:count:usage:", None, c_void_p, NSUInteger, NSUInteger)
end_encoding = Message("endEncoding", None)
