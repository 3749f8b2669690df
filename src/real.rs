//! The float element types the core computes on without conversion (f32, f64).

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// A reward element. Statistics are always accumulated in f64, whatever `Self` is.
pub trait Real: Copy + Send + Sync + PartialEq + 'static {
    /// True when the squares of any finite value and of any difference of two
    /// finite values are finite and normal in f64 (so no overflow/underflow guard is needed).
    const SQUARES_FIT_F64: bool;
    /// The largest finite value, in f64.
    const MAX_F64: f64;
    fn to_f64(self) -> f64;
    fn from_f64(v: f64) -> Self;
    fn zero() -> Self;
    /// Four elements from `p` as one f64 vector.
    ///
    /// # Safety
    /// `p` must be valid for 4 reads; only call from code compiled with AVX enabled.
    #[cfg(target_arch = "x86_64")]
    unsafe fn load4(p: *const Self) -> __m256d;
    /// Store four f64 lanes to `p`, rounded to `Self` as `from_f64` does.
    ///
    /// # Safety
    /// `p` must be valid for 4 writes; only call from code compiled with AVX enabled.
    #[cfg(target_arch = "x86_64")]
    unsafe fn store4(p: *mut Self, v: __m256d);
    /// Eight elements from `p` as f64 vectors (lanes 0-3, lanes 4-7).
    ///
    /// # Safety
    /// As `load4`, for 8 reads.
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load8(p: *const Self) -> [__m256d; 2] {
        // SAFETY: the caller's contract: p valid for 8 reads, AVX enabled.
        unsafe { [Self::load4(p), Self::load4(p.add(4))] }
    }
    /// Store eight f64 lanes to `p` (lanes 0-3, lanes 4-7), as `store4` does.
    ///
    /// # Safety
    /// As `store4`, for 8 writes.
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn store8(p: *mut Self, v: [__m256d; 2]) {
        // SAFETY: the caller's contract: p valid for 8 writes, AVX enabled.
        unsafe {
            Self::store4(p, v[0]);
            Self::store4(p.add(4), v[1]);
        }
    }
}

impl Real for f32 {
    const SQUARES_FIT_F64: bool = true;
    const MAX_F64: f64 = f32::MAX as f64;
    #[inline(always)]
    fn to_f64(self) -> f64 {
        self as f64
    }
    #[inline(always)]
    fn from_f64(v: f64) -> Self {
        v as f32
    }
    #[inline(always)]
    fn zero() -> Self {
        0.0
    }
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load4(p: *const Self) -> __m256d {
        // SAFETY: the caller upholds this function's contract (see its doc and the module's).
        unsafe { _mm256_cvtps_pd(_mm_loadu_ps(p)) }
    }
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn store4(p: *mut Self, v: __m256d) {
        // SAFETY: the caller upholds this function's contract (see its doc and the module's).
        unsafe { _mm_storeu_ps(p, _mm256_cvtpd_ps(v)) }
    }
}

impl Real for f64 {
    const SQUARES_FIT_F64: bool = false;
    const MAX_F64: f64 = f64::MAX;
    #[inline(always)]
    fn to_f64(self) -> f64 {
        self
    }
    #[inline(always)]
    fn from_f64(v: f64) -> Self {
        v
    }
    #[inline(always)]
    fn zero() -> Self {
        0.0
    }
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load4(p: *const Self) -> __m256d {
        // SAFETY: the caller upholds this function's contract (see its doc and the module's).
        unsafe { _mm256_loadu_pd(p) }
    }
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn store4(p: *mut Self, v: __m256d) {
        // SAFETY: the caller upholds this function's contract (see its doc and the module's).
        unsafe { _mm256_storeu_pd(p, v) }
    }
}
