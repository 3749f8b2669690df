//! The float element types the core computes on without conversion (f32, f64).

/// A reward element. Statistics are always accumulated in f64, whatever `Self` is.
pub trait Real: Copy + Send + Sync + PartialEq + 'static {
    /// True when the squares of any finite value and of any difference of two
    /// finite values are finite and normal in f64 (so no overflow/underflow guard is needed).
    const SQUARES_FIT_F64: bool;
    fn to_f64(self) -> f64;
    fn from_f64(v: f64) -> Self;
    fn zero() -> Self;
}

impl Real for f32 {
    const SQUARES_FIT_F64: bool = true;
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
}

impl Real for f64 {
    const SQUARES_FIT_F64: bool = false;
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
}
