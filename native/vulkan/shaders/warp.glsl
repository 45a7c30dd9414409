// Logical 32-lane warps, as the CUDA kernels use them: thread t of a workgroup is lane t & 31 of
// warp t >> 5, and a warp's sum is CUDA's butterfly (xor 16, 8, 4, 2, 1; every lane ends with
// the same value, since a + b == b + a bit for bit).
//
// Two builds of each kernel that sums over a warp:
//  - default: the butterfly's result is rebuilt from the 32 lanes' values in shared memory (the
//    same additions in the same tree: lane 0's view of the butterfly), so it runs on any device,
//    whatever its subgroup size (lavapipe: 8);
//  - SUBGROUP (<kernel>.sg.spv): subgroupShuffleXor, for devices whose subgroups have >= 32
//    invocations and support shuffles in compute (the host should create the pipeline with
//    VK_PIPELINE_SHADER_STAGE_CREATE_REQUIRE_FULL_SUBGROUPS_BIT). Threads are numbered from
//    their subgroup ids there, so a warp is always 32 consecutive invocations of one subgroup.
// Both give bit-identical results.

#ifdef SUBGROUP
uint thread_id() { return gl_SubgroupID * gl_SubgroupSize + gl_SubgroupInvocationID; }

float warp_sum(float v) {
    precise float s = v;
    [[unroll]] for (uint o = 16u; o > 0u; o >>= 1) s += subgroupShuffleXor(s, o);
    return s;
}
#else
uint thread_id() { return gl_LocalInvocationID.x; }

// The butterfly sum of wred[base .. base + 31] (written by the 32 lanes, then a barrier).
float tree32(uint base) {
    precise float t[16];
    for (uint l = 0u; l < 16u; l++) t[l] = wred[base + l] + wred[base + l + 16u];
    for (uint l = 0u; l < 8u; l++) t[l] = t[l] + t[l + 8u];
    for (uint l = 0u; l < 4u; l++) t[l] = t[l] + t[l + 4u];
    for (uint l = 0u; l < 2u; l++) t[l] = t[l] + t[l + 2u];
    precise float s = t[0] + t[1];
    return s;
}
#endif
