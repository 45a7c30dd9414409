"""One Vulkan device as native/gpu.py's GpuDevice: buffers reached by device address (no descriptor
sets: every kernel argument, buffers included, is a push constant), compute pipelines from the
shipped SPIR-V with the workgroup size as a specialization constant, and one command buffer per
compiled graph, recorded once and resubmitted each step (Vulkan's answer to a CUDA graph):
copy the inputs in, every dispatch with a barrier after it, copy the outputs out."""

from __future__ import annotations

import ctypes
import os
from ctypes import byref, c_uint32, c_uint64, c_void_p
from typing import Any

import numpy as np
from mtprun.native.device_memory import AddressMap, byte_view, pack_arguments
from mtprun.native.vulkan import api as vk
from mtprun.native.vulkan.build_shaders import spirv_code, spirv_path
from mtprun.runner.errors import MtprunError

PUSH_BYTES = 128  # every device offers at least this much push-constant space
_STAGING_BYTES = 64 << 20  # uploads and downloads of device-local memory go through this in pieces
_PREFERENCE = {2: 0, 1: 1, 3: 2, 4: 3}  # device type -> rank: discrete, integrated, virtual, CPU, then other
_CPU_TYPE = 4
# What the shaders use (native/vulkan/shaders): double sums and transcendentals, 64-bit addresses,
# 16-bit loads of block weights, buffers by device address.
_REQUIRED = ((vk.FEATURE_SHADER_FLOAT64, "shaderFloat64"), (vk.FEATURE_SHADER_INT64, "shaderInt64"))
_REQUIRED12 = ((vk.FEATURE12_BUFFER_DEVICE_ADDRESS, "bufferDeviceAddress"),)


def pack_push_constants(values: list) -> bytes:
    """Kernel arguments (ctypes values in parameter order) as the shaders' push-constant block lays
    them out (std430)."""
    try:
        return pack_arguments(values, PUSH_BYTES)
    except ValueError as exc:
        raise MtprunError(f"{str(exc).rstrip('.')} (push constants).") from None


class _Instance:
    """The loader and a Vulkan 1.2 instance; its physical devices with their properties. One per
    process, never destroyed (as CUDA's primary context): drivers crash when an instance goes
    before its devices, which garbage collection cannot order."""

    def __init__(self) -> None:
        self.lib = lib = vk.load()
        app = vk.ApplicationInfo(vk.ST_APPLICATION_INFO, None, b"mtprun", 1, b"mtprun", 1, vk.API_VERSION_1_2)
        info = vk.InstanceCreateInfo(vk.ST_INSTANCE_CREATE_INFO, None, 0, ctypes.addressof(app), 0, None, 0, None)
        self.handle = c_void_p()
        rc = lib.vkCreateInstance(byref(info), None, byref(self.handle))
        if rc != vk.SUCCESS:
            raise MtprunError(f"no Vulkan driver could start (vkCreateInstance returned {rc}; on Debian: "
                              "apt-get install mesa-vulkan-drivers for a CPU driver).")
        count = c_uint32()
        vk.check(lib.vkEnumeratePhysicalDevices(self.handle, byref(count), None), "vkEnumeratePhysicalDevices")
        handles = (c_void_p * count.value)()
        vk.check(lib.vkEnumeratePhysicalDevices(self.handle, byref(count), handles), "vkEnumeratePhysicalDevices")
        self.devices = [_PhysicalDevice(lib, c_void_p(h)) for h in handles[: count.value]]


class _PhysicalDevice:
    def __init__(self, lib: ctypes.CDLL, handle: c_void_p) -> None:
        self.handle = handle
        self.float_controls = vk.PhysicalDeviceFloatControlsProperties(vk.ST_PHYSICAL_DEVICE_FLOAT_CONTROLS_PROPERTIES, None)
        self.subgroup = vk.PhysicalDeviceSubgroupProperties(vk.ST_PHYSICAL_DEVICE_SUBGROUP_PROPERTIES,
                                                           ctypes.addressof(self.float_controls))
        props = vk.PhysicalDeviceProperties2(vk.ST_PHYSICAL_DEVICE_PROPERTIES_2, ctypes.addressof(self.subgroup))
        lib.vkGetPhysicalDeviceProperties2(handle, byref(props))
        self.props = props.properties
        self.name = self.props.deviceName.decode(errors="replace")
        self.type = self.props.deviceType
        # The feature chain, kept: the device is created with exactly what it reports (less a few).
        # Vulkan 1.3's struct only where the device knows it (computeFullSubgroups, for the .sg kernels).
        self.f13 = vk.PhysicalDeviceVulkan13Features(vk.ST_PHYSICAL_DEVICE_VULKAN_1_3_FEATURES, None)
        has13 = self.props.apiVersion >= vk.API_VERSION_1_3
        self.f12 = vk.PhysicalDeviceVulkan12Features(vk.ST_PHYSICAL_DEVICE_VULKAN_1_2_FEATURES,
                                                     ctypes.addressof(self.f13) if has13 else None)
        self.f11 = vk.PhysicalDeviceVulkan11Features(vk.ST_PHYSICAL_DEVICE_VULKAN_1_1_FEATURES, ctypes.addressof(self.f12))
        self.features = vk.PhysicalDeviceFeatures2(vk.ST_PHYSICAL_DEVICE_FEATURES_2, ctypes.addressof(self.f11))
        if self.props.apiVersion >= vk.API_VERSION_1_2:
            lib.vkGetPhysicalDeviceFeatures2(handle, byref(self.features))

    def missing(self) -> list[str]:
        """What this device lacks that the kernels need."""
        if self.props.apiVersion < vk.API_VERSION_1_2:
            return ["Vulkan 1.2"]
        out = [name for i, name in _REQUIRED if not self.features.f[i]]
        out += [name for i, name in _REQUIRED12 if not self.f12.f[i]]
        return out + ([] if self.f11.f[vk.FEATURE11_STORAGE_BUFFER_16BIT] else ["storageBuffer16BitAccess"])

    @property
    def description(self) -> str:
        return f"{self.name} ({vk.DEVICE_TYPE_NAMES.get(self.type, 'other')})"


_INSTANCE: list[_Instance] = []
_DEVICES: dict[int, "VulkanDevice"] = {}  # physical device index -> its one open device


def _instance() -> _Instance:
    if not _INSTANCE:
        _INSTANCE.append(_Instance())
    return _INSTANCE[0]


def open_device(gpu_only: bool = False) -> "VulkanDevice":
    """The chosen Vulkan device, opened once per process and shared by every backend instance
    (its pipelines are built once; it lives as long as the process)."""
    inst = _instance()
    phys = _choose(inst.devices, gpu_only)
    index = inst.devices.index(phys)
    if index not in _DEVICES:
        _DEVICES[index] = VulkanDevice(inst, phys)
    return _DEVICES[index]


def list_devices() -> list[str]:
    """Every Vulkan device here, described, with what it lacks (for `mtprun info --backends`)."""
    inst = _instance()
    return [d.description + (f": lacks {', '.join(d.missing())}" if d.missing() else "") for d in inst.devices]


def _choose(devices: list[_PhysicalDevice], gpu_only: bool) -> _PhysicalDevice:
    """MTPRUN_VULKAN_DEVICE (an index or part of a name) if set, else the best usable device."""
    want = os.environ.get("MTPRUN_VULKAN_DEVICE", "").strip()
    if want:
        picked = [d for i, d in enumerate(devices) if want == str(i) or want.lower() in d.name.lower()]
        if not picked:
            raise MtprunError(f"MTPRUN_VULKAN_DEVICE={want!r} matches none of the Vulkan devices: "
                              f"{'; '.join(d.description for d in devices) or 'none'}.")
        if picked[0].missing():
            raise MtprunError(f"Vulkan device {picked[0].description} lacks {', '.join(picked[0].missing())}.")
        return picked[0]
    usable = [d for d in devices if not d.missing()]
    if not usable:
        found = "; ".join(f"{d.description} lacks {', '.join(d.missing())}" for d in devices)
        raise MtprunError(f"no usable Vulkan device ({found or 'none found'}).")
    best = min(usable, key=lambda d: _PREFERENCE.get(d.type, 9))
    if gpu_only and best.type == _CPU_TYPE:
        raise MtprunError(f"the only Vulkan device is a CPU driver ({best.description}).")
    return best


class VkBuffer:
    """A buffer with its own memory, reached by device address (`ptr`); host-mapped if `mapped`."""

    def __init__(self, dev: "VulkanDevice", nbytes: int, host: bool) -> None:
        self.dev, self.nbytes, self.host = dev, int(nbytes), host
        lib, handle = dev.lib, dev.handle
        usage = vk.BUFFER_USAGE_TRANSFER_SRC | vk.BUFFER_USAGE_TRANSFER_DST | vk.BUFFER_USAGE_STORAGE | vk.BUFFER_USAGE_DEVICE_ADDRESS
        info = vk.BufferCreateInfo(vk.ST_BUFFER_CREATE_INFO, None, 0, max(self.nbytes, 4), usage, 0, 0, None)
        self.buffer = c_uint64()
        vk.check(lib.vkCreateBuffer(handle, byref(info), None, byref(self.buffer)), "vkCreateBuffer")
        req = vk.MemoryRequirements()
        lib.vkGetBufferMemoryRequirements(handle, self.buffer, byref(req))
        flags = vk.MemoryAllocateFlagsInfo(vk.ST_MEMORY_ALLOCATE_FLAGS_INFO, None, vk.MEMORY_ALLOCATE_DEVICE_ADDRESS, 0)
        alloc = vk.MemoryAllocateInfo(vk.ST_MEMORY_ALLOCATE_INFO, ctypes.addressof(flags), req.size,
                                      dev.memory_type(req.memoryTypeBits, host))
        self.memory = c_uint64()
        rc = lib.vkAllocateMemory(handle, byref(alloc), None, byref(self.memory))
        if rc != vk.SUCCESS:
            lib.vkDestroyBuffer(handle, self.buffer, None)
            self.buffer = None
            raise MtprunError(f"the Vulkan device could not allocate {self.nbytes / 2**20:.1f} MiB (VkResult {rc}).")
        vk.check(lib.vkBindBufferMemory(handle, self.buffer, self.memory, 0), "vkBindBufferMemory")
        self.mapped = 0
        if host or dev.memory_is_host_visible(alloc.memoryTypeIndex):
            p = c_void_p()
            vk.check(lib.vkMapMemory(handle, self.memory, 0, req.size, 0, byref(p)), "vkMapMemory")
            self.mapped = p.value
        addr = vk.BufferDeviceAddressInfo(vk.ST_BUFFER_DEVICE_ADDRESS_INFO, None, self.buffer.value)
        self.ptr = int(lib.vkGetBufferDeviceAddress(handle, byref(addr)))
        dev.buffers.add(self)
        if not host:
            dev.buffer_bytes += self.nbytes
        self.array = np.frombuffer((ctypes.c_ubyte * max(self.nbytes, 1)).from_address(self.mapped), np.uint8) if self.mapped else None

    def view(self, offset: int, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        return byte_view(self.array, offset, shape, dtype)

    def __del__(self) -> None:
        buffer, self.buffer = getattr(self, "buffer", None), None
        if buffer is None:
            return
        if not self.host:
            self.dev.buffer_bytes -= self.nbytes
        try:
            self.dev.buffers.remove(self)
            self.dev.lib.vkDestroyBuffer(self.dev.handle, buffer, None)
            self.dev.lib.vkFreeMemory(self.dev.handle, self.memory, None)
        except Exception:  # interpreter shutdown: the device is going away anyway
            pass


class VulkanDevice:
    """GpuDevice on the chosen Vulkan device: one compute queue, one fence, recorded command buffers."""

    def __init__(self, instance: _Instance, phys: _PhysicalDevice) -> None:
        self._instance = instance
        self.lib = lib = instance.lib
        self.physical = phys
        self.name = phys.description
        self.on_cpu_driver = phys.type == _CPU_TYPE  # e.g. Mesa's lavapipe
        # Weight rows per matrix-product workgroup of 128 invocations (native/gpu.py): one per
        # invocation in the CPU-driver build of the kernels, else (None) one per 32-lane warp.
        self.mm_rows = self.mmid_rows = 128 if self.on_cpu_driver else None
        self.limits = phys.props.limits
        self.subgroup_size = phys.subgroup.subgroupSize
        # The butterfly kernels' subgroup variants need 32-lane shuffles in compute shaders.
        # The .sg kernels number threads within full subgroups of >= 32 invocations (warp.glsl).
        self.use_subgroups = bool(self.subgroup_size >= 32 and phys.subgroup.supportedOperations & vk.SUBGROUP_FEATURE_SHUFFLE
                                  and phys.subgroup.supportedStages & vk.SHADER_STAGE_COMPUTE
                                  and phys.f13.f[vk.FEATURE13_COMPUTE_FULL_SUBGROUPS]
                                  and os.environ.get("MTPRUN_VULKAN_SUBGROUPS", "1") != "0")
        # IEEE float32 modes every kernel declares; taken out of the SPIR-V where the device lacks them.
        self._float_modes = {"denorm_preserve": bool(phys.float_controls.shaderDenormPreserveFloat32),
                             "inf_nan_preserve": bool(phys.float_controls.shaderSignedZeroInfNanPreserveFloat32)}
        # The device argmax (threads of an argmax_part workgroup) where NaNs keep their meaning: NumPy's order puts them first.
        self.argmax_threads = 256 if self._float_modes["inf_nan_preserve"] else 0
        self.max_groups = int(self.limits.maxComputeWorkGroupCount[0])
        count = c_uint32()
        lib.vkGetPhysicalDeviceQueueFamilyProperties(phys.handle, byref(count), None)
        families = (vk.QueueFamilyProperties * count.value)()
        lib.vkGetPhysicalDeviceQueueFamilyProperties(phys.handle, byref(count), families)
        self.family = next(i for i, f in enumerate(families) if f.queueFlags & vk.QUEUE_COMPUTE)
        # Timestamps around every step give the GPU's busy time (`device_seconds`, for the benchmark).
        valid_bits = families[self.family].timestampValidBits
        self.timestamps = valid_bits > 0 and os.environ.get("MTPRUN_VULKAN_TIMESTAMPS", "1") != "0"
        self._tick_mask = (1 << valid_bits) - 1 if valid_bits < 64 else (1 << 64) - 1
        self._tick_seconds = float(self.limits.timestampPeriod) * 1e-9
        self.device_seconds = 0.0  # GPU time of every step executed so far
        priority = ctypes.c_float(1.0)
        queue_info = vk.DeviceQueueCreateInfo(vk.ST_DEVICE_QUEUE_CREATE_INFO, None, 0, self.family, 1, ctypes.addressof(priority))
        # Everything the device reports, less bounds checks (slow) and address capture (debugging).
        phys.features.f[vk.FEATURE_ROBUST_BUFFER_ACCESS] = 0
        phys.f12.f[vk.FEATURE12_BUFFER_DEVICE_ADDRESS_CAPTURE_REPLAY] = 0
        phys.f12.f[vk.FEATURE12_BUFFER_DEVICE_ADDRESS_MULTI_DEVICE] = 0
        info = vk.DeviceCreateInfo(vk.ST_DEVICE_CREATE_INFO, ctypes.addressof(phys.features), 0, 1,
                                   ctypes.addressof(queue_info), 0, None, 0, None, None)
        self.handle = c_void_p()
        vk.check(lib.vkCreateDevice(phys.handle, byref(info), None, byref(self.handle)), "vkCreateDevice")
        self.queue = c_void_p()
        lib.vkGetDeviceQueue(self.handle, self.family, 0, byref(self.queue))
        self._memory = vk.PhysicalDeviceMemoryProperties()
        lib.vkGetPhysicalDeviceMemoryProperties(phys.handle, byref(self._memory))
        pool = vk.CommandPoolCreateInfo(vk.ST_COMMAND_POOL_CREATE_INFO, None, vk.COMMAND_POOL_RESET_COMMAND_BUFFER, self.family)
        self.pool = c_uint64()
        vk.check(lib.vkCreateCommandPool(self.handle, byref(pool), None, byref(self.pool)), "vkCreateCommandPool")
        self.fence = c_uint64()
        fence = vk.FenceCreateInfo(vk.ST_FENCE_CREATE_INFO, None, 0)
        vk.check(lib.vkCreateFence(self.handle, byref(fence), None, byref(self.fence)), "vkCreateFence")
        push = vk.PushConstantRange(vk.SHADER_STAGE_COMPUTE, 0, PUSH_BYTES)
        layout = vk.PipelineLayoutCreateInfo(vk.ST_PIPELINE_LAYOUT_CREATE_INFO, None, 0, 0, None, 1, ctypes.addressof(push))
        self.layout = c_uint64()
        vk.check(lib.vkCreatePipelineLayout(self.handle, byref(layout), None, byref(self.layout)), "vkCreatePipelineLayout")
        self.buffers = AddressMap()
        self.buffer_bytes = 0  # device memory (not host-visible staging) the live buffers hold
        self._modules: dict[str, c_uint64] = {}
        self._pipelines: dict[tuple[str, int, int], c_uint64] = {}
        self._oneshot = self._command_buffer()
        self._staging: VkBuffer | None = None

    # -- memory
    def memory_type(self, bits: int, host: bool) -> int:
        want = vk.MEMORY_HOST_VISIBLE | vk.MEMORY_HOST_COHERENT if host else vk.MEMORY_DEVICE_LOCAL
        candidates = [i for i in range(self._memory.memoryTypeCount)
                      if bits >> i & 1 and self._memory.memoryTypes[i].propertyFlags & want == want]
        if not candidates:
            raise MtprunError("the Vulkan device has no suitable memory type for the backend's buffers.")
        if host:  # read back through cached memory where there is some
            cached = [i for i in candidates if self._memory.memoryTypes[i].propertyFlags & vk.MEMORY_HOST_CACHED]
            return (cached or candidates)[0]
        return candidates[0]

    def memory_is_host_visible(self, index: int) -> bool:
        want = vk.MEMORY_HOST_VISIBLE | vk.MEMORY_HOST_COHERENT
        return self._memory.memoryTypes[index].propertyFlags & want == want

    def alloc(self, nbytes: int) -> VkBuffer:
        return VkBuffer(self, nbytes, host=False)

    def wrap(self, data: np.ndarray) -> VkBuffer:
        buf = self.alloc(data.nbytes)
        self.upload(buf.ptr, data)
        return buf

    def host(self, nbytes: int) -> VkBuffer:
        return VkBuffer(self, nbytes, host=True)

    def upload(self, ptr: int, arr: np.ndarray) -> None:
        data = np.ascontiguousarray(arr).reshape(-1).view(np.uint8)
        buf, off = self.buffers.find(ptr, data.nbytes)
        if buf.mapped:
            buf.array[off : off + data.nbytes] = data
            return
        staging = self._staging_buffer()
        for start in range(0, data.nbytes, _STAGING_BYTES):
            piece = data[start : start + _STAGING_BYTES]
            staging.array[: piece.nbytes] = piece
            self._copy(staging, 0, buf, off + start, piece.nbytes)

    def download(self, out: np.ndarray, ptr: int) -> np.ndarray:
        assert out.flags.c_contiguous
        flat = out.reshape(-1).view(np.uint8)
        buf, off = self.buffers.find(ptr, flat.nbytes)
        if buf.mapped:  # every submission was waited for: the device is idle
            flat[:] = buf.array[off : off + flat.nbytes]
            return out
        staging = self._staging_buffer()
        for start in range(0, flat.nbytes, _STAGING_BYTES):
            n = min(_STAGING_BYTES, flat.nbytes - start)
            self._copy(buf, off + start, staging, 0, n)
            flat[start : start + n] = staging.array[:n]
        return out

    def zero(self, ptr: int, nbytes: int) -> None:
        buf, off = self.buffers.find(ptr, nbytes)
        assert off % 4 == 0 and nbytes % 4 == 0, "fills are whole 32-bit words"
        cb = self._begin(self._oneshot)
        self.lib.vkCmdFillBuffer(cb, buf.buffer, off, nbytes, 0)
        self._submit_and_wait(cb)

    def _staging_buffer(self) -> VkBuffer:
        if self._staging is None:
            self._staging = VkBuffer(self, _STAGING_BYTES, host=True)
        return self._staging

    def _copy(self, src: VkBuffer, src_off: int, dst: VkBuffer, dst_off: int, nbytes: int) -> None:
        cb = self._begin(self._oneshot)
        region = vk.BufferCopy(src_off, dst_off, nbytes)
        self.lib.vkCmdCopyBuffer(cb, src.buffer, dst.buffer, 1, byref(region))
        self._submit_and_wait(cb)

    # -- command buffers
    def _command_buffer(self) -> c_void_p:
        info = vk.CommandBufferAllocateInfo(vk.ST_COMMAND_BUFFER_ALLOCATE_INFO, None, self.pool.value, 0, 1)
        cb = c_void_p()
        vk.check(self.lib.vkAllocateCommandBuffers(self.handle, byref(info), byref(cb)), "vkAllocateCommandBuffers")
        return cb

    def _begin(self, cb: c_void_p) -> c_void_p:
        info = vk.CommandBufferBeginInfo(vk.ST_COMMAND_BUFFER_BEGIN_INFO, None, 0, None)
        vk.check(self.lib.vkBeginCommandBuffer(cb, byref(info)), "vkBeginCommandBuffer")
        return cb

    def _submit_and_wait(self, cb: c_void_p, ended: bool = False) -> None:
        lib = self.lib
        if not ended:
            vk.check(lib.vkEndCommandBuffer(cb), "vkEndCommandBuffer")
        handles = (c_void_p * 1)(cb.value)
        submit = vk.SubmitInfo(vk.ST_SUBMIT_INFO, None, 0, None, None, 1, ctypes.addressof(handles), 0, None)
        vk.check(lib.vkQueueSubmit(self.queue, 1, byref(submit), self.fence), "vkQueueSubmit")
        rc = lib.vkWaitForFences(self.handle, 1, byref(self.fence), 1, c_uint64(-1).value)
        lib.vkResetFences(self.handle, 1, byref(self.fence))
        vk.check(rc, "vkWaitForFences")

    def _barrier(self, cb: c_void_p, src_stage: int, src_access: int, dst_stage: int, dst_access: int) -> None:
        mb = vk.MemoryBarrier(vk.ST_MEMORY_BARRIER, None, src_access, dst_access)
        self.lib.vkCmdPipelineBarrier(cb, src_stage, dst_stage, 0, 1, byref(mb), 0, None, 0, None)

    # -- pipelines
    def _module(self, kernel: str, variant: str | None) -> c_uint64:
        key = spirv_path(kernel, variant).stem
        mod = self._modules.get(key)
        if mod is None:
            if not spirv_path(kernel, variant).exists():
                raise MtprunError(f"the Vulkan kernel {key} is missing from the package ({spirv_path(kernel, variant)}).")
            code = spirv_code(kernel, variant, **self._float_modes)
            buf = ctypes.create_string_buffer(code, len(code))
            info = vk.ShaderModuleCreateInfo(vk.ST_SHADER_MODULE_CREATE_INFO, None, 0, len(code), ctypes.addressof(buf))
            mod = self._modules[key] = c_uint64()
            vk.check(self.lib.vkCreateShaderModule(self.handle, byref(info), None, byref(mod)), f"vkCreateShaderModule({key})")
        return mod

    def variant(self, kernel: str) -> str | None:
        """The build of a kernel that runs here: the CPU-driver one on such a driver, the subgroup
        one where the device allows, else (None) the portable one; each where the kernel has it."""
        wanted = "cpu" if self.on_cpu_driver else "sg" if self.use_subgroups else None
        return wanted if wanted and spirv_path(kernel, wanted).exists() else None

    def pipeline(self, kernel: str, block: int, shared: int) -> c_uint64:
        key = (kernel, block, shared)
        pipe = self._pipelines.get(key)
        if pipe is None:
            variant = self.variant(kernel)
            module = self._module(kernel, variant)
            consts = (c_uint32 * 2)(block, max(shared // 4, 1))
            entries = (vk.SpecializationMapEntry * 2)(vk.SpecializationMapEntry(0, 0, 4), vk.SpecializationMapEntry(1, 4, 4))
            spec = vk.SpecializationInfo(2, ctypes.addressof(entries), 8, ctypes.addressof(consts))
            flags = vk.SHADER_STAGE_REQUIRE_FULL_SUBGROUPS if variant == "sg" else 0  # warps of 32 inside one subgroup
            stage = vk.PipelineShaderStageCreateInfo(vk.ST_PIPELINE_SHADER_STAGE_CREATE_INFO, None, flags, vk.SHADER_STAGE_COMPUTE,
                                                     module.value, b"main", ctypes.addressof(spec))
            info = vk.ComputePipelineCreateInfo(vk.ST_COMPUTE_PIPELINE_CREATE_INFO, None, vk.PIPELINE_CREATE_DISPATCH_BASE,
                                                stage, self.layout.value, 0, -1)
            pipe = self._pipelines[key] = c_uint64()
            vk.check(self.lib.vkCreateComputePipelines(self.handle, 0, 1, byref(info), None, byref(pipe)),
                     f"vkCreateComputePipelines({kernel})")
        return pipe

    # -- GpuDevice: compiled graphs
    def prepare(self, c: Any) -> "_Recorded":
        """Record c's step once: inputs in, every dispatch (row grids past the device's limit in
        pieces), outputs out."""
        lib, lay = self.lib, c.layout
        rec = _Recorded(self, self._command_buffer(), self._query_pool() if self.timestamps else None)
        cb = self._begin(rec.cb)
        keep = rec.keep
        if rec.queries is not None:
            lib.vkCmdResetQueryPool(cb, rec.queries, 0, 2)
            lib.vkCmdWriteTimestamp(cb, vk.STAGE_TOP_OF_PIPE, rec.queries, 0)
        region = vk.BufferCopy(0, 0, lay.in_bytes)
        lib.vkCmdCopyBuffer(cb, c.stage_in.buffer, c.arena.buffer, 1, byref(region))
        self._barrier(cb, vk.STAGE_TRANSFER, vk.ACCESS_TRANSFER_WRITE, vk.STAGE_COMPUTE, vk.ACCESS_SHADER_READ | vk.ACCESS_SHADER_WRITE)
        for launch in c.launches:
            lib.vkCmdBindPipeline(cb, 1, self.pipeline(launch.kernel, launch.block, launch.shared))  # 1: compute
            data = pack_push_constants(launch.values)
            raw = ctypes.create_string_buffer(data, len(data))
            keep.append(raw)
            lib.vkCmdPushConstants(cb, self.layout, vk.SHADER_STAGE_COMPUTE, 0, len(data), raw)
            gx, gy = launch.grid
            for x0 in range(0, gx, self.max_groups):
                lib.vkCmdDispatchBase(cb, x0, 0, 0, min(self.max_groups, gx - x0), gy, 1)
            self._barrier(cb, vk.STAGE_COMPUTE, vk.ACCESS_SHADER_WRITE, vk.STAGE_COMPUTE, vk.ACCESS_SHADER_READ | vk.ACCESS_SHADER_WRITE)
        self._barrier(cb, vk.STAGE_COMPUTE, vk.ACCESS_SHADER_WRITE, vk.STAGE_TRANSFER, vk.ACCESS_TRANSFER_READ)
        region = vk.BufferCopy(lay.out_start, 0, lay.out_bytes)
        lib.vkCmdCopyBuffer(cb, c.arena.buffer, c.stage_out.buffer, 1, byref(region))
        self._barrier(cb, vk.STAGE_TRANSFER, vk.ACCESS_TRANSFER_WRITE, vk.STAGE_HOST, vk.ACCESS_HOST_READ)
        if rec.queries is not None:
            lib.vkCmdWriteTimestamp(cb, vk.STAGE_BOTTOM_OF_PIPE, rec.queries, 1)
        vk.check(lib.vkEndCommandBuffer(cb), "vkEndCommandBuffer")
        return rec

    def execute(self, c: Any) -> None:
        rec = c.program
        self._submit_and_wait(rec.cb, ended=True)
        if rec.queries is not None:
            ticks = (c_uint64 * 2)()
            rc = self.lib.vkGetQueryPoolResults(self.handle, rec.queries, 0, 2, 16, ticks, 8, vk.QUERY_RESULT_64)
            if rc == vk.SUCCESS:
                self.device_seconds += ((ticks[1] - ticks[0]) & self._tick_mask) * self._tick_seconds

    def _query_pool(self) -> c_uint64:
        info = vk.QueryPoolCreateInfo(vk.ST_QUERY_POOL_CREATE_INFO, None, 0, vk.QUERY_TYPE_TIMESTAMP, 2, 0)
        pool = c_uint64()
        vk.check(self.lib.vkCreateQueryPool(self.handle, byref(info), None, byref(pool)), "vkCreateQueryPool")
        return pool

    def free_step(self, rec: "_Recorded") -> None:
        self.lib.vkFreeCommandBuffers(self.handle, self.pool, 1, byref(rec.cb))
        if rec.queries is not None:
            self.lib.vkDestroyQueryPool(self.handle, rec.queries, None)


class _Recorded:
    """A recorded step: its command buffer, the push-constant bytes it was recorded from, and its
    timestamp query pool (or None); freed with it."""

    def __init__(self, dev: VulkanDevice, cb: c_void_p, queries: c_uint64 | None) -> None:
        self.dev, self.cb, self.queries, self.keep = dev, cb, queries, []

    def __del__(self) -> None:
        try:
            self.dev.free_step(self)
        except Exception:
            pass

