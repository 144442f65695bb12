//! CPU facts that decide between code paths at run time.

/// Whether `pdep` (BMI2) is available *and fast*. Intel (Haswell on) runs it in one micro-op; AMD
/// before Zen 3 (family 0x17, and Hygon's 0x18) implements it in microcode at tens to hundreds of
/// cycles depending on the mask, which would make the progressive refinement path far slower
/// than its bit-clearing loop. Detected once.
pub(crate) fn fast_pdep() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static FAST: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *FAST.get_or_init(|| {
            use std::arch::x86_64::__cpuid;
            if !std::arch::is_x86_feature_detected!("bmi2") {
                return false;
            }
            #[allow(unused_unsafe)] // `__cpuid` is safe on newer compilers
            let (vendor, leaf1) = unsafe { (__cpuid(0), __cpuid(1)) };
            let mut name = [0u8; 12];
            name[..4].copy_from_slice(&vendor.ebx.to_le_bytes());
            name[4..8].copy_from_slice(&vendor.edx.to_le_bytes());
            name[8..].copy_from_slice(&vendor.ecx.to_le_bytes());
            let base = (leaf1.eax >> 8) & 0xF;
            let family = if base == 0xF {
                base + ((leaf1.eax >> 20) & 0xFF)
            } else {
                base
            };
            let slow = matches!(&name, b"AuthenticAMD" | b"HygonGenuine") && family < 0x19;
            !slow
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}
