"""The slice of the Vulkan 1.2 API the Vulkan backend uses, through ctypes on the loader
(libvulkan.so.1): the structs (declared as in vulkan_core.h, field for field), the constants and
the functions' signatures. Facts from the Vulkan specification; no wrapper library.

Handles: dispatchable ones (instance, physical device, device, queue, command buffer) are pointers
(c_void_p); the others are 64-bit integers (c_uint64)."""

from __future__ import annotations

import ctypes
from ctypes import (
    POINTER,
    c_char,
    c_char_p,
    c_float,
    c_int32,
    c_size_t,
    c_uint8,
    c_uint32,
    c_uint64,
    c_void_p,
)

from mtprun.runner.errors import MtprunError

_CTYPES = {"u8": c_uint8, "u32": c_uint32, "i32": c_int32, "u64": c_uint64, "f32": c_float, "ptr": c_void_p,
           "size": c_size_t, "char": c_char, "str": c_char_p}


def _struct(name: str, spec: str, **nested: type) -> type[ctypes.Structure]:
    """A ctypes Structure from 'type field; type field[N]; ...' (types: _CTYPES or a `nested` name)."""
    fields = []
    for decl in filter(None, (d.strip() for d in spec.split(";"))):
        kind, field = decl.split()
        ctype = nested.get(kind) or _CTYPES[kind]
        if "[" in field:
            field, count = field[:-1].split("[")
            ctype = ctype * int(count)
        fields.append((field, ctype))
    return type(name, (ctypes.Structure,), {"_fields_": fields})


def _header(extra: str = "") -> str:
    return "u32 sType; ptr pNext; " + extra


ApplicationInfo = _struct("ApplicationInfo", _header(
    "str pApplicationName; u32 applicationVersion; str pEngineName; u32 engineVersion; u32 apiVersion"))
InstanceCreateInfo = _struct("InstanceCreateInfo", _header(
    "u32 flags; ptr pApplicationInfo; u32 enabledLayerCount; ptr ppEnabledLayerNames; u32 enabledExtensionCount; "
    "ptr ppEnabledExtensionNames"))
_LIMITS = (
    "u32 maxImageDimension1D; u32 maxImageDimension2D; u32 maxImageDimension3D; u32 maxImageDimensionCube; "
    "u32 maxImageArrayLayers; u32 maxTexelBufferElements; u32 maxUniformBufferRange; u32 maxStorageBufferRange; "
    "u32 maxPushConstantsSize; u32 maxMemoryAllocationCount; u32 maxSamplerAllocationCount; "
    "u64 bufferImageGranularity; u64 sparseAddressSpaceSize; u32 maxBoundDescriptorSets; u32 descriptorLimits[15]; "
    "u32 maxVertexInputAttributes; u32 maxVertexInputBindings; u32 maxVertexInputAttributeOffset; "
    "u32 maxVertexInputBindingStride; u32 maxVertexOutputComponents; u32 tessellationLimits[8]; "
    "u32 geometryLimits[5]; u32 fragmentLimits[4]; u32 maxComputeSharedMemorySize; "
    "u32 maxComputeWorkGroupCount[3]; u32 maxComputeWorkGroupInvocations; u32 maxComputeWorkGroupSize[3]; "
    "u32 subPixelPrecisionBits; u32 subTexelPrecisionBits; u32 mipmapPrecisionBits; u32 maxDrawIndexedIndexValue; "
    "u32 maxDrawIndirectCount; f32 maxSamplerLodBias; f32 maxSamplerAnisotropy; u32 maxViewports; "
    "u32 maxViewportDimensions[2]; f32 viewportBoundsRange[2]; u32 viewportSubPixelBits; size minMemoryMapAlignment; "
    "u64 minTexelBufferOffsetAlignment; u64 minUniformBufferOffsetAlignment; u64 minStorageBufferOffsetAlignment; "
    "i32 minTexelOffset; u32 maxTexelOffset; i32 minTexelGatherOffset; u32 maxTexelGatherOffset; "
    "f32 minInterpolationOffset; f32 maxInterpolationOffset; u32 subPixelInterpolationOffsetBits; "
    "u32 framebufferLimits[7]; u32 maxColorAttachments; u32 sampleCounts[5]; u32 maxSampleMaskWords; "
    "u32 timestampComputeAndGraphics; f32 timestampPeriod; u32 maxClipDistances; u32 maxCullDistances; "
    "u32 maxCombinedClipAndCullDistances; u32 discreteQueuePriorities; f32 pointSizeRange[2]; f32 lineWidthRange[2]; "
    "f32 pointSizeGranularity; f32 lineWidthGranularity; u32 strictLines; u32 standardSampleLocations; "
    "u64 optimalBufferCopyOffsetAlignment; u64 optimalBufferCopyRowPitchAlignment; u64 nonCoherentAtomSize")
PhysicalDeviceLimits = _struct("PhysicalDeviceLimits", _LIMITS)
PhysicalDeviceProperties = _struct("PhysicalDeviceProperties", (
    "u32 apiVersion; u32 driverVersion; u32 vendorID; u32 deviceID; u32 deviceType; char deviceName[256]; "
    "u8 pipelineCacheUUID[16]; Limits limits; u32 sparseProperties[5]"), Limits=PhysicalDeviceLimits)
PhysicalDeviceProperties2 = _struct("PhysicalDeviceProperties2", _header("Props properties"), Props=PhysicalDeviceProperties)
PhysicalDeviceFloatControlsProperties = _struct("PhysicalDeviceFloatControlsProperties", _header(
    "u32 denormBehaviorIndependence; u32 roundingModeIndependence; u32 shaderSignedZeroInfNanPreserveFloat16; "
    "u32 shaderSignedZeroInfNanPreserveFloat32; u32 shaderSignedZeroInfNanPreserveFloat64; u32 shaderDenormPreserveFloat16; "
    "u32 shaderDenormPreserveFloat32; u32 rest[10]"))
PhysicalDeviceSubgroupProperties = _struct("PhysicalDeviceSubgroupProperties", _header(
    "u32 subgroupSize; u32 supportedStages; u32 supportedOperations; u32 quadOperationsInAllStages"))
# Feature structs: their VkBool32 fields as one array, indexed by the FEATURE_* constants below.
PhysicalDeviceFeatures2 = _struct("PhysicalDeviceFeatures2", _header("u32 f[55]"))
PhysicalDeviceVulkan11Features = _struct("PhysicalDeviceVulkan11Features", _header("u32 f[12]"))
PhysicalDeviceVulkan12Features = _struct("PhysicalDeviceVulkan12Features", _header("u32 f[47]"))
PhysicalDeviceVulkan13Features = _struct("PhysicalDeviceVulkan13Features", _header("u32 f[15]"))
QueueFamilyProperties = _struct("QueueFamilyProperties",
                                "u32 queueFlags; u32 queueCount; u32 timestampValidBits; u32 minImageTransferGranularity[3]")
DeviceQueueCreateInfo = _struct("DeviceQueueCreateInfo", _header(
    "u32 flags; u32 queueFamilyIndex; u32 queueCount; ptr pQueuePriorities"))
DeviceCreateInfo = _struct("DeviceCreateInfo", _header(
    "u32 flags; u32 queueCreateInfoCount; ptr pQueueCreateInfos; u32 enabledLayerCount; ptr ppEnabledLayerNames; "
    "u32 enabledExtensionCount; ptr ppEnabledExtensionNames; ptr pEnabledFeatures"))
MemoryType = _struct("MemoryType", "u32 propertyFlags; u32 heapIndex")
MemoryHeap = _struct("MemoryHeap", "u64 size; u32 flags")
PhysicalDeviceMemoryProperties = _struct("PhysicalDeviceMemoryProperties", (
    "u32 memoryTypeCount; Type memoryTypes[32]; u32 memoryHeapCount; Heap memoryHeaps[16]"), Type=MemoryType, Heap=MemoryHeap)
BufferCreateInfo = _struct("BufferCreateInfo", _header(
    "u32 flags; u64 size; u32 usage; u32 sharingMode; u32 queueFamilyIndexCount; ptr pQueueFamilyIndices"))
MemoryRequirements = _struct("MemoryRequirements", "u64 size; u64 alignment; u32 memoryTypeBits")
MemoryAllocateInfo = _struct("MemoryAllocateInfo", _header("u64 allocationSize; u32 memoryTypeIndex"))
MemoryAllocateFlagsInfo = _struct("MemoryAllocateFlagsInfo", _header("u32 flags; u32 deviceMask"))
BufferDeviceAddressInfo = _struct("BufferDeviceAddressInfo", _header("u64 buffer"))
ShaderModuleCreateInfo = _struct("ShaderModuleCreateInfo", _header("u32 flags; size codeSize; ptr pCode"))
PushConstantRange = _struct("PushConstantRange", "u32 stageFlags; u32 offset; u32 size")
PipelineLayoutCreateInfo = _struct("PipelineLayoutCreateInfo", _header(
    "u32 flags; u32 setLayoutCount; ptr pSetLayouts; u32 pushConstantRangeCount; ptr pPushConstantRanges"))
SpecializationMapEntry = _struct("SpecializationMapEntry", "u32 constantID; u32 offset; size size")
SpecializationInfo = _struct("SpecializationInfo", "u32 mapEntryCount; ptr pMapEntries; size dataSize; ptr pData")
PipelineShaderStageCreateInfo = _struct("PipelineShaderStageCreateInfo", _header(
    "u32 flags; u32 stage; u64 module; str pName; ptr pSpecializationInfo"))
ComputePipelineCreateInfo = _struct("ComputePipelineCreateInfo", _header(
    "u32 flags; Stage stage; u64 layout; u64 basePipelineHandle; i32 basePipelineIndex"), Stage=PipelineShaderStageCreateInfo)
CommandPoolCreateInfo = _struct("CommandPoolCreateInfo", _header("u32 flags; u32 queueFamilyIndex"))
CommandBufferAllocateInfo = _struct("CommandBufferAllocateInfo", _header("u64 commandPool; u32 level; u32 commandBufferCount"))
CommandBufferBeginInfo = _struct("CommandBufferBeginInfo", _header("u32 flags; ptr pInheritanceInfo"))
BufferCopy = _struct("BufferCopy", "u64 srcOffset; u64 dstOffset; u64 size")
MemoryBarrier = _struct("MemoryBarrier", _header("u32 srcAccessMask; u32 dstAccessMask"))
SubmitInfo = _struct("SubmitInfo", _header(
    "u32 waitSemaphoreCount; ptr pWaitSemaphores; ptr pWaitDstStageMask; u32 commandBufferCount; ptr pCommandBuffers; "
    "u32 signalSemaphoreCount; ptr pSignalSemaphores"))
FenceCreateInfo = _struct("FenceCreateInfo", _header("u32 flags"))
QueryPoolCreateInfo = _struct("QueryPoolCreateInfo", _header(
    "u32 flags; u32 queryType; u32 queryCount; u32 pipelineStatistics"))

# sType values
ST_APPLICATION_INFO, ST_INSTANCE_CREATE_INFO, ST_DEVICE_QUEUE_CREATE_INFO, ST_DEVICE_CREATE_INFO = 0, 1, 2, 3
ST_SUBMIT_INFO, ST_MEMORY_ALLOCATE_INFO, ST_FENCE_CREATE_INFO, ST_QUERY_POOL_CREATE_INFO = 4, 5, 8, 11
ST_BUFFER_CREATE_INFO, ST_SHADER_MODULE_CREATE_INFO, ST_PIPELINE_SHADER_STAGE_CREATE_INFO = 12, 16, 18
ST_COMPUTE_PIPELINE_CREATE_INFO, ST_PIPELINE_LAYOUT_CREATE_INFO, ST_COMMAND_POOL_CREATE_INFO = 29, 30, 39
ST_COMMAND_BUFFER_ALLOCATE_INFO, ST_COMMAND_BUFFER_BEGIN_INFO, ST_MEMORY_BARRIER = 40, 42, 46
ST_PHYSICAL_DEVICE_VULKAN_1_1_FEATURES, ST_PHYSICAL_DEVICE_VULKAN_1_2_FEATURES, ST_PHYSICAL_DEVICE_VULKAN_1_3_FEATURES = 49, 51, 53
ST_PHYSICAL_DEVICE_FEATURES_2, ST_PHYSICAL_DEVICE_PROPERTIES_2 = 1000059000, 1000059001
ST_MEMORY_ALLOCATE_FLAGS_INFO, ST_PHYSICAL_DEVICE_SUBGROUP_PROPERTIES = 1000060000, 1000094000
ST_BUFFER_DEVICE_ADDRESS_INFO, ST_PHYSICAL_DEVICE_FLOAT_CONTROLS_PROPERTIES = 1000244001, 1000197000

# Indices into the feature arrays (VkPhysicalDeviceFeatures, ...Vulkan11Features, ...Vulkan12Features).
FEATURE_ROBUST_BUFFER_ACCESS, FEATURE_SHADER_FLOAT64, FEATURE_SHADER_INT64 = 0, 39, 40
FEATURE11_STORAGE_BUFFER_16BIT = 0
FEATURE12_BUFFER_DEVICE_ADDRESS = 36
FEATURE12_BUFFER_DEVICE_ADDRESS_CAPTURE_REPLAY, FEATURE12_BUFFER_DEVICE_ADDRESS_MULTI_DEVICE = 37, 38
FEATURE13_COMPUTE_FULL_SUBGROUPS = 8

API_VERSION_1_2, API_VERSION_1_3 = (1 << 22) | (2 << 12), (1 << 22) | (3 << 12)
DEVICE_TYPE_NAMES = {0: "other", 1: "integrated GPU", 2: "discrete GPU", 3: "virtual GPU", 4: "CPU"}
QUEUE_COMPUTE = 0x2
MEMORY_DEVICE_LOCAL, MEMORY_HOST_VISIBLE, MEMORY_HOST_COHERENT, MEMORY_HOST_CACHED = 0x1, 0x2, 0x4, 0x8
BUFFER_USAGE_TRANSFER_SRC, BUFFER_USAGE_TRANSFER_DST, BUFFER_USAGE_STORAGE = 0x1, 0x2, 0x20
BUFFER_USAGE_DEVICE_ADDRESS = 0x20000
MEMORY_ALLOCATE_DEVICE_ADDRESS = 0x2
SHADER_STAGE_COMPUTE = 0x20
PIPELINE_CREATE_DISPATCH_BASE = 0x10
SHADER_STAGE_REQUIRE_FULL_SUBGROUPS = 0x2
STAGE_TOP_OF_PIPE, STAGE_COMPUTE, STAGE_TRANSFER, STAGE_BOTTOM_OF_PIPE, STAGE_HOST = 0x1, 0x800, 0x1000, 0x2000, 0x4000
ACCESS_SHADER_READ, ACCESS_SHADER_WRITE, ACCESS_TRANSFER_READ, ACCESS_TRANSFER_WRITE = 0x20, 0x40, 0x800, 0x1000
ACCESS_HOST_READ = 0x2000
COMMAND_POOL_RESET_COMMAND_BUFFER = 0x2
QUERY_TYPE_TIMESTAMP, QUERY_RESULT_64 = 2, 0x1
SUBGROUP_FEATURE_SHUFFLE = 0x10
SUCCESS = 0

P, H = c_void_p, c_uint64  # dispatchable handle, non-dispatchable handle
_SIGNATURES: dict[str, list] = {
    "vkCreateInstance": [P, P, POINTER(P)],
    "vkEnumeratePhysicalDevices": [P, POINTER(c_uint32), P],
    "vkGetPhysicalDeviceProperties2": [P, P],
    "vkGetPhysicalDeviceFeatures2": [P, P],
    "vkGetPhysicalDeviceMemoryProperties": [P, P],
    "vkGetPhysicalDeviceQueueFamilyProperties": [P, POINTER(c_uint32), P],
    "vkCreateDevice": [P, P, P, POINTER(P)],
    "vkGetDeviceQueue": [P, c_uint32, c_uint32, POINTER(P)],
    "vkCreateBuffer": [P, P, P, POINTER(H)],
    "vkDestroyBuffer": [P, H, P],
    "vkGetBufferMemoryRequirements": [P, H, P],
    "vkAllocateMemory": [P, P, P, POINTER(H)],
    "vkFreeMemory": [P, H, P],
    "vkBindBufferMemory": [P, H, H, c_uint64],
    "vkMapMemory": [P, H, c_uint64, c_uint64, c_uint32, POINTER(c_void_p)],
    "vkGetBufferDeviceAddress": [P, P],
    "vkCreateShaderModule": [P, P, P, POINTER(H)],
    "vkCreatePipelineLayout": [P, P, P, POINTER(H)],
    "vkCreateComputePipelines": [P, H, c_uint32, P, P, POINTER(H)],
    "vkCreateCommandPool": [P, P, P, POINTER(H)],
    "vkAllocateCommandBuffers": [P, P, POINTER(P)],
    "vkFreeCommandBuffers": [P, H, c_uint32, POINTER(P)],
    "vkBeginCommandBuffer": [P, P],
    "vkEndCommandBuffer": [P],
    "vkCmdBindPipeline": [P, c_uint32, H],
    "vkCmdPushConstants": [P, H, c_uint32, c_uint32, c_uint32, P],
    "vkCmdDispatchBase": [P, c_uint32, c_uint32, c_uint32, c_uint32, c_uint32, c_uint32],
    "vkCmdPipelineBarrier": [P, c_uint32, c_uint32, c_uint32, c_uint32, P, c_uint32, P, c_uint32, P],
    "vkCmdCopyBuffer": [P, H, H, c_uint32, P],
    "vkCmdFillBuffer": [P, H, c_uint64, c_uint64, c_uint32],
    "vkCmdWriteTimestamp": [P, c_uint32, H, c_uint32],
    "vkCmdResetQueryPool": [P, H, c_uint32, c_uint32],
    "vkCreateQueryPool": [P, P, P, POINTER(H)],
    "vkDestroyQueryPool": [P, H, P],
    "vkGetQueryPoolResults": [P, H, c_uint32, c_uint32, c_size_t, P, c_uint64, c_uint32],
    "vkCreateFence": [P, P, P, POINTER(H)],
    "vkResetFences": [P, c_uint32, POINTER(H)],
    "vkWaitForFences": [P, c_uint32, POINTER(H), c_uint32, c_uint64],
    "vkQueueSubmit": [P, c_uint32, P, H],
}
# Functions that return nothing (the rest return a VkResult).
_VOID = {"vkGetPhysicalDeviceProperties2", "vkGetPhysicalDeviceFeatures2", "vkGetPhysicalDeviceMemoryProperties",
         "vkGetPhysicalDeviceQueueFamilyProperties", "vkGetDeviceQueue", "vkDestroyBuffer", "vkGetBufferMemoryRequirements",
         "vkFreeMemory", "vkFreeCommandBuffers", "vkCmdBindPipeline", "vkCmdPushConstants", "vkCmdDispatchBase",
         "vkCmdPipelineBarrier", "vkCmdCopyBuffer", "vkCmdFillBuffer", "vkCmdWriteTimestamp", "vkCmdResetQueryPool",
         "vkDestroyQueryPool"}


class VulkanError(MtprunError):
    """A Vulkan call failed."""


def load() -> ctypes.CDLL:
    """The Vulkan loader with every function above typed; a clear error where it is missing."""
    try:
        lib = ctypes.CDLL("libvulkan.so.1")
    except OSError:
        raise MtprunError("the Vulkan backend needs the Vulkan loader (libvulkan.so.1 was not found; "
                          "on Debian: apt-get install libvulkan1 mesa-vulkan-drivers).") from None
    for name, args in _SIGNATURES.items():
        fn = getattr(lib, name)
        fn.argtypes = args
        fn.restype = c_uint64 if name == "vkGetBufferDeviceAddress" else None if name in _VOID else c_int32
    return lib


def check(rc: int, what: str) -> None:
    if rc != SUCCESS:
        raise VulkanError(f"Vulkan {what} failed (VkResult {rc}).")
