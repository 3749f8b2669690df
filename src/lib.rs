//! groupadv: group-relative advantages for LLM RL rollouts.
//!
//! The core is plain Rust with no Python in it, in stages that depend only downwards: layout
//! (`groups`) -> moments (`stats`) -> rules (`policy`) -> apply (`kernel`, `simd`, `labelled`)
//! -> orchestration (`advantage`); `token` and `parallel` (the pools) on the side;
//! this file alone binds it to Python as `groupadv._native` (feature `python`, which maturin
//! turns on). The bindings only convert arguments, release the GIL and map errors.

pub mod advantage;
pub mod components;
pub mod groups;
mod hint;
mod kernel;
pub mod labelled;
pub mod parallel;
pub mod policy;
pub mod real;
pub mod runs;
pub mod scan;
pub mod select;
#[cfg(target_arch = "x86_64")]
mod simd;
pub mod stats;
pub mod token;
pub mod token_baseline;
pub mod whiten;

/// The bit-identity check of the compiled copies of the write pass (for tests).
#[doc(hidden)]
pub use kernel::{self_check as kernel_self_check, Isa};

#[cfg(feature = "python")]
mod python {
    use crate::advantage::{self, AdvError, Center, NonFinite, Params, Scale, Singleton};
    use crate::groups::{self, Grouping, LayoutError};
    use crate::parallel;
    use crate::real::Real;
    use crate::stats::Moments;
    use crate::token;
    use numpy::{Element, PyArray1, PyArrayMethods, PyUntypedArrayMethods};
    use pyo3::exceptions::{PyTypeError, PyValueError};
    use pyo3::prelude::*;
    use pyo3::types::{PyDict, PyString, PyTuple};

    fn value_error(e: impl std::fmt::Display) -> PyErr {
        PyValueError::new_err(e.to_string())
    }

    /// An instance of `groupadv.errors.<class>(msg, **attrs)`; a plain ValueError if that
    /// module cannot be imported (the compiled module used on its own).
    fn typed_error(
        class: &str,
        msg: String,
        attrs: impl for<'py> FnOnce(&Bound<'py, PyDict>) -> PyResult<()>,
    ) -> PyErr {
        Python::attach(|py| {
            let build = || -> PyResult<PyErr> {
                let cls = py.import("groupadv.errors")?.getattr(class)?;
                let kwargs = PyDict::new(py);
                attrs(&kwargs)?;
                Ok(PyErr::from_value(cls.call((msg.as_str(),), Some(&kwargs))?))
            };
            build().unwrap_or_else(|_| PyValueError::new_err(msg.clone()))
        })
    }

    fn thread_error(msg: String) -> PyErr {
        typed_error("ThreadCountError", msg, |_| Ok(()))
    }

    /// A thread count for the core: `0` (the default) resolved and checked here, so that an
    /// unusable GROUPADV_NUM_THREADS is raised instead of ignored.
    fn threads_arg(n: usize) -> PyResult<usize> {
        match n {
            0 => parallel::checked_default_threads().map_err(thread_error),
            n => parallel::check_threads(n, "num_threads").map_err(thread_error),
        }
    }

    /// Borrow checks that raise instead of panicking: two calls (in two Python threads, the
    /// GIL released) sharing an `out=` buffer, or one reading what another writes.
    fn busy(names: &[&str]) -> PyErr {
        let msg = format!(
            "{} is in use by another groupadv call (out= of one call shared with another call's \
             arguments, e.g. from another thread); give each call its own out= buffer",
            names.join(" / ")
        );
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        typed_error("OutOverlapError", msg, move |kw| {
            kw.set_item("names", names)
        })
    }

    fn read<'py, T: Element, D: numpy::ndarray::Dimension>(
        a: &Bound<'py, numpy::PyArray<T, D>>,
        name: &str,
    ) -> PyResult<numpy::PyReadonlyArray<'py, T, D>> {
        a.try_readonly().map_err(|_| busy(&[name]))
    }

    fn write<'py, T: Element, D: numpy::ndarray::Dimension>(
        a: &Bound<'py, numpy::PyArray<T, D>>,
        name: &str,
    ) -> PyResult<numpy::PyReadwriteArray<'py, T, D>> {
        a.try_readwrite().map_err(|_| busy(&[name, "an input"]))
    }

    /// Last resort: a Rust panic becomes `groupadv.errors.InternalError` (a ValueError), not
    /// pyo3's PanicException (a BaseException that `except Exception` does not catch).
    fn guard<T>(f: impl FnOnce() -> PyResult<T>) -> PyResult<T> {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|p| {
            let what = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            Err(typed_error(
                "InternalError",
                format!("internal error in groupadv's compiled core (a bug, please report it with the input): {what}"),
                |_| Ok(()),
            ))
        })
    }

    impl From<AdvError> for PyErr {
        fn from(e: AdvError) -> PyErr {
            let msg = e.to_string();
            match e {
                AdvError::NonFinite { index, value } => {
                    typed_error("NonFiniteRewardError", msg, move |kw| {
                        kw.set_item("index", index)?;
                        kw.set_item("value", value)
                    })
                }
                AdvError::Overflow { group } => {
                    typed_error("AdvantageOverflowError", msg, move |kw| {
                        kw.set_item("group", group)
                    })
                }
                AdvError::BatchOverflow => typed_error("AdvantageOverflowError", msg, |_| Ok(())),
                AdvError::Singleton { group, index } => {
                    typed_error("SingletonGroupError", msg, move |kw| {
                        kw.set_item("group", group)?;
                        kw.set_item("index", index)
                    })
                }
                // the token passes (scan.rs, whiten.rs)
                AdvError::TokenNonFinite { index, value, .. }
                | AdvError::MaskedNonFinite { index, value } => {
                    typed_error("NonFiniteRewardError", msg, move |kw| {
                        kw.set_item("index", index)?;
                        kw.set_item("value", value)
                    })
                }
                AdvError::ReturnsOverflow { row } => {
                    typed_error("AdvantageOverflowError", msg, move |kw| {
                        kw.set_item("index", row)
                    })
                }
                AdvError::MaskedOverflow => typed_error("AdvantageOverflowError", msg, |_| Ok(())),
                _ => value_error(msg),
            }
        }
    }

    impl From<LayoutError> for PyErr {
        fn from(e: LayoutError) -> PyErr {
            value_error(e)
        }
    }

    /// A resolved group layout, reusable across calls on reward arrays of the same length.
    #[pyclass(frozen, module = "groupadv._native", name = "Grouping")]
    pub struct PyGrouping {
        inner: Grouping,
        /// Labelled groups that came out contiguous and of one size: kept as `Uniform` (its
        /// faster passes) but reported and pickled as "ragged", like contiguous labels of
        /// any sizes.
        ragged_kind: bool,
    }

    #[pymethods]
    impl PyGrouping {
        /// Number of rewards the layout covers.
        #[getter]
        fn n(&self) -> usize {
            self.inner.len()
        }
        #[getter]
        fn n_groups(&self) -> usize {
            self.inner.n_groups()
        }
        /// "uniform", "ragged" or "permuted".
        #[getter]
        fn kind(&self) -> &'static str {
            match self.inner {
                Grouping::Uniform { .. } if self.ragged_kind => "ragged",
                Grouping::Uniform { .. } => "uniform",
                Grouping::Ragged { .. } => "ragged",
                Grouping::Labelled(_) => "permuted",
            }
        }
        /// Group sizes, in group order.
        fn sizes<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<i64>> {
            let o = self.inner.offsets();
            PyArray1::from_iter(py, o.windows(2).map(|w| (w[1] - w[0]) as i64))
        }
        /// Group index of each reward, in input order.
        fn codes<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<i64>> {
            PyArray1::from_iter(py, self.inner.codes().into_iter().map(i64::from))
        }
        /// Pickle / copy support: rebuilt from its kind and its group size, offsets or codes
        /// (codes are numbered by first appearance, so they re-factorize to themselves).
        fn __reduce__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
            let restore = py
                .import("groupadv._native")?
                .getattr("_grouping_restore")?;
            let data: Bound<'py, PyAny> = match &self.inner {
                Grouping::Uniform { size, .. } if !self.ragged_kind => {
                    size.into_pyobject(py)?.into_any()
                }
                Grouping::Uniform { .. } | Grouping::Ragged { .. } => {
                    PyArray1::from_iter(py, self.inner.offsets().into_iter().map(|o| o as i64))
                        .into_any()
                }
                Grouping::Labelled(_) => self.codes(py).into_any(),
            };
            (restore, (self.kind(), self.inner.len(), data))
                .into_pyobject(py)
                .map(|t| t.into_any())
        }
        fn __repr__(&self) -> String {
            format!(
                "Grouping(kind={:?}, n={}, n_groups={})",
                self.kind(),
                self.inner.len(),
                self.inner.n_groups()
            )
        }
    }

    fn wrap(inner: Grouping) -> PyGrouping {
        PyGrouping {
            inner,
            ragged_kind: false,
        }
    }

    /// A layout resolved from labels (contiguous labels of one size are reported "ragged").
    fn wrap_labelled(inner: Grouping) -> PyGrouping {
        PyGrouping {
            ragged_kind: matches!(inner, Grouping::Uniform { .. }),
            inner,
        }
    }

    #[pyfunction]
    fn grouping_uniform(n: usize, group_size: usize) -> PyResult<PyGrouping> {
        Ok(wrap(Grouping::uniform(n, group_size)?))
    }

    #[pyfunction]
    fn grouping_offsets(n: usize, offsets: &Bound<'_, PyArray1<i64>>) -> PyResult<PyGrouping> {
        guard(|| {
            Ok(wrap(Grouping::ragged(
                n,
                read(offsets, "offsets")?.as_slice()?,
            )?))
        })
    }

    /// Inverse of `Grouping.__reduce__`.
    #[pyfunction]
    fn _grouping_restore(
        py: Python<'_>,
        kind: &str,
        n: usize,
        data: &Bound<'_, PyAny>,
    ) -> PyResult<PyGrouping> {
        match kind {
            "uniform" => grouping_uniform(n, data.extract()?),
            "ragged" => grouping_offsets(n, data.cast()?),
            "permuted" => {
                let ids = read(data.cast::<PyArray1<i64>>()?, "codes")?;
                let ids = ids.as_slice()?;
                let (g, _, _) = py.detach(|| crate::runs::group_ints(ids, 0))?;
                if g.len() != n {
                    return Err(value_error("corrupt pickled Grouping: wrong length"));
                }
                Ok(wrap_labelled(g))
            }
            _ => Err(value_error(format!("unknown Grouping kind {kind:?}"))),
        }
    }

    type Labelled<'py> = (PyGrouping, Bound<'py, PyArray1<i64>>);

    fn labelled<'py>(
        py: Python<'py>,
        codes: Vec<u32>,
        first: Vec<usize>,
    ) -> PyResult<Labelled<'py>> {
        let g = py.detach(|| Grouping::from_factorized(codes, &first))?;
        Ok(with_first(py, g, first))
    }

    fn with_first<'py>(py: Python<'py>, g: Grouping, first: Vec<usize>) -> Labelled<'py> {
        (wrap_labelled(g), index_array(py, first))
    }

    /// Indices as an int64 array that takes over the vector (converted in place, no copy).
    fn index_array(py: Python<'_>, v: Vec<usize>) -> Bound<'_, PyArray1<i64>> {
        PyArray1::from_vec(py, v.into_iter().map(|i| i as i64).collect())
    }

    /// Groups from int64 labels (runs of equal labels found first); also returns the first
    /// index of each group and, `with_labels`, the label of each group (`ids[first]`).
    #[pyfunction]
    #[pyo3(signature = (ids, with_labels=false))]
    fn grouping_ids_int<'py>(
        py: Python<'py>,
        ids: &Bound<'py, PyArray1<i64>>,
        with_labels: bool,
    ) -> PyResult<Bound<'py, PyTuple>> {
        let ids = read(ids, "group_ids")?;
        let ids = ids.as_slice()?;
        let (g, first, labels) = py.detach(|| crate::runs::group_ints(ids, 0))?;
        let (g, first) = with_first(py, g, first);
        if with_labels {
            (g, first, PyArray1::from_vec(py, labels)).into_pyobject(py)
        } else {
            (g, first).into_pyobject(py)
        }
    }

    /// Groups from fixed-width labels given as the rows of a uint8 matrix (numpy 'U'/'S').
    #[pyfunction]
    fn grouping_ids_bytes<'py>(
        py: Python<'py>,
        rows: &Bound<'py, numpy::PyArray2<u8>>,
    ) -> PyResult<Labelled<'py>> {
        let rows = read(rows, "group_ids")?;
        let (n, width) = (rows.shape()[0], rows.shape()[1].max(1));
        let buf = rows.as_slice()?;
        let (codes, first) = py.detach(|| {
            if buf.is_empty() {
                // Zero-width labels: every reward has the same (empty) label.
                groups::factorize(std::iter::repeat_n(0u8, n), n)
            } else {
                groups::factorize(buf.chunks_exact(width), n)
            }
        })?;
        labelled(py, codes, first)
    }

    /// How many labels ahead `str_numbers` prefetches an object.
    const AHEAD: usize = 16;

    /// Run starts (None: codes per label), group codes and first index of each group.
    type StrCodes = (Option<Vec<usize>>, Vec<u32>, Vec<usize>);

    /// Group codes of str labels, given by their objects' addresses (`addrs`) and the objects
    /// (`item(i)` the i-th): with runs, one per run of the same object (and the run starts,
    /// for `runs::from_runs`), else one per label (and the first index of each group). By
    /// identity first: runs of one object (one comparison of neighbouring addresses), or
    /// `runs::codes_by_address` (the objects by address, without reading them; both on the
    /// pool's threads for long inputs). Then each object not seen before (in order of first
    /// appearance) is hashed and compared by text, so that distinct str objects with equal
    /// text are one group. TypeError for a label that is not exactly a str (subclasses may
    /// define their own `__eq__` / `__hash__`): the caller then groups the labels as a Python
    /// dict does. Only addresses are read on other threads, never an object.
    fn str_codes<'a, 'py: 'a>(
        addrs: &[usize],
        item: impl Fn(usize) -> &'a Bound<'py, PyAny>,
    ) -> PyResult<StrCodes> {
        if crate::runs::looks_like_runs(addrs) {
            let (starts, heads) = crate::runs::runs(addrs, 0);
            return str_run_codes(starts, heads, item);
        }
        // Provisional codes: the index of the object among the distinct objects.
        let (mut codes, fresh) = crate::runs::codes_by_address(addrs, 0);
        // The objects by value (distinct objects: identity tells nothing more).
        let (code_of, first) = str_numbers(&fresh, &item, |_, _| false)?;
        for c in codes.iter_mut() {
            *c = code_of[*c as usize];
        }
        Ok((None, codes, first))
    }

    /// [`str_codes`] of labels in runs of the same object, given as their starts and the
    /// objects' addresses: the first label of each run numbered by value (a label that comes
    /// back in a later run is seen there by its hash; an address map would only pay where
    /// the same object starts many runs).
    fn str_run_codes<'a, 'py: 'a>(
        starts: Vec<usize>,
        addrs: Vec<usize>,
        item: impl Fn(usize) -> &'a Bound<'py, PyAny>,
    ) -> PyResult<StrCodes> {
        let (codes, first) = str_numbers(&starts, &item, |a, b| addrs[a] == addrs[b])?;
        Ok((Some(starts), codes, first))
    }

    /// Codes by value (in order of first appearance) of the labels `at` (indices into the
    /// labels) and the first index of each code: type and hash of each (read ahead: the
    /// objects lie anywhere in memory), numbered by hash, and where hashes are equal compared
    /// by identity (`same(a, b)`: the labels `at[a]`, `at[b]` are one object), then as Python
    /// compares two str (the text is read only there, for the rare equal hashes of distinct
    /// objects; lone surrogates included).
    fn str_numbers<'a, 'py: 'a>(
        at: &[usize],
        item: &impl Fn(usize) -> &'a Bound<'py, PyAny>,
        same: impl Fn(usize, usize) -> bool,
    ) -> PyResult<(Vec<u32>, Vec<usize>)> {
        let mut hashes = Vec::with_capacity(at.len());
        for (j, &i) in at.iter().enumerate() {
            if let Some(&ahead) = at.get(j + AHEAD) {
                crate::runs::prefetch_object(item(ahead).as_ptr() as usize);
            }
            hashes.push(str_hash(i, item(i))? as u64);
        }
        let codes = crate::runs::number_by_hash(&hashes, |a, b| {
            Ok::<_, PyErr>(same(a, b) || item(at[a]).eq(item(at[b]))?)
        })?;
        let mut first = Vec::new();
        for (&i, &c) in at.iter().zip(&codes) {
            if c as usize == first.len() {
                first.push(i);
            }
        }
        Ok((codes, first))
    }

    /// The hash of an exact str label; TypeError for any other label.
    fn str_hash(i: usize, obj: &Bound<'_, PyAny>) -> PyResult<isize> {
        if !obj.is_exact_instance_of::<PyString>() {
            return Err(PyTypeError::new_err(format!(
                "group_ids[{i}] is not a str (got {})",
                obj.get_type()
                    .name()
                    .map(|n| n.to_string())
                    .unwrap_or_default()
            )));
        }
        obj.hash()
    }

    /// Groups from Python str labels: a 1-D object array (read in place) or any sequence.
    /// TypeError if any label is not exactly a str (see `str_runs`).
    #[pyfunction]
    fn grouping_ids_str<'py>(py: Python<'py>, ids: &Bound<'py, PyAny>) -> PyResult<Labelled<'py>> {
        let (n, (starts, codes, first)) = match ids.cast::<PyArray1<Py<PyAny>>>() {
            Ok(arr) if arr.is_contiguous() => {
                let arr = arr.readonly();
                let items = arr.as_slice()?;
                // SAFETY: `Py<PyAny>` is a transparent wrapper of one non-null pointer: the
                // slice read as the objects' addresses (same size and alignment). Only the
                // addresses are read, by the pool's workers too: no object is touched, and
                // the GIL, held throughout, keeps Python code from changing the array.
                let addrs: &[usize] =
                    unsafe { std::slice::from_raw_parts(items.as_ptr().cast(), items.len()) };
                (items.len(), str_codes(addrs, |i| items[i].bind(py))?)
            }
            _ => {
                let items: Vec<Bound<'py, PyAny>> = ids.try_iter()?.collect::<PyResult<_>>()?;
                let addrs: Vec<usize> = items.iter().map(|o| o.as_ptr() as usize).collect();
                (items.len(), str_codes(&addrs, |i| &items[i])?)
            }
        };
        let (g, first) = py.detach(|| match starts {
            Some(starts) => crate::runs::from_runs(n, &starts, &codes, 0),
            None => Grouping::from_factorized(codes, &first).map(|g| (g, first)),
        })?;
        Ok(with_first(py, g, first))
    }

    fn parse_params(
        center: &str,
        scale: &str,
        ddof: u32,
        eps: f64,
        singleton: &str,
        nan: &str,
        num_threads: usize,
    ) -> PyResult<Params> {
        let bad = |what: &str, got: &str, allowed: &str| {
            value_error(format!("{what} must be one of {allowed}, got {got:?}"))
        };
        Ok(Params {
            center: match center {
                "mean" => Center::Mean,
                "loo" => Center::LeaveOneOut,
                "none" => Center::None,
                _ => return Err(bad("center", center, "'mean', 'loo', 'none'")),
            },
            scale: match scale {
                "group" => Scale::Group,
                "batch" => Scale::Batch,
                "batch_residual" => Scale::BatchResidual,
                "none" => Scale::None,
                _ => {
                    return Err(bad(
                        "scale",
                        scale,
                        "'group', 'batch', 'batch_residual', 'none'",
                    ))
                }
            },
            ddof,
            eps,
            singleton: match singleton {
                "zero" => Singleton::Zero,
                "raw" => Singleton::Raw,
                "error" => Singleton::Error,
                _ => return Err(bad("singleton", singleton, "'zero', 'raw', 'error'")),
            },
            nonfinite: match nan {
                "raise" => NonFinite::Raise,
                "propagate" => NonFinite::Propagate,
                "omit" => NonFinite::Omit,
                _ => return Err(bad("nan", nan, "'raise', 'propagate', 'omit'")),
            },
            threads: threads_arg(num_threads)?,
            batch_std: None,
        })
    }

    /// `f` on the values of `rewards` and of `out`, which must be a 1-D array of the same
    /// dtype (`f` borrows any further input after these two).
    fn with_rewards_out<T: Real + Element, R>(
        rewards: &Bound<'_, PyArray1<T>>,
        out: &Bound<'_, PyAny>,
        f: impl FnOnce(&[T], &mut [T]) -> PyResult<R>,
    ) -> PyResult<R> {
        let out = out.cast::<PyArray1<T>>().map_err(|_| {
            PyTypeError::new_err("out must be a 1-D array of the same dtype as rewards")
        })?;
        let x = read(rewards, "rewards")?;
        let mut o = write(out, "out")?;
        f(x.as_slice()?, o.as_slice_mut()?)
    }

    /// `f32_fn` or `f64_fn` (the same code for each dtype) on the f32 or f64 1-D rewards and
    /// an `out` of the same dtype (`with_rewards_out`).
    fn with_typed<E: Into<PyErr>>(
        rewards: &Bound<'_, PyAny>,
        out: &Bound<'_, PyAny>,
        f32_fn: impl FnOnce(&[f32], &mut [f32]) -> Result<(), E>,
        f64_fn: impl FnOnce(&[f64], &mut [f64]) -> Result<(), E>,
    ) -> PyResult<()> {
        if let Ok(r) = rewards.cast::<PyArray1<f32>>() {
            with_rewards_out(r, out, |x, o| f32_fn(x, o).map_err(Into::into))
        } else if let Ok(r) = rewards.cast::<PyArray1<f64>>() {
            with_rewards_out(r, out, |x, o| f64_fn(x, o).map_err(Into::into))
        } else {
            Err(PyTypeError::new_err(
                "rewards must be a 1-D float32 or float64 array",
            ))
        }
    }

    /// Advantages of `rewards` (contiguous 1-D float32/float64) into `out` (same dtype/length).
    #[pyfunction]
    #[pyo3(signature = (rewards, out, grouping, center, scale, ddof, eps, singleton, nan, num_threads, batch_std=None, moments=None))]
    #[allow(clippy::too_many_arguments)]
    fn advantages(
        py: Python<'_>,
        rewards: &Bound<'_, PyAny>,
        out: &Bound<'_, PyAny>,
        grouping: &PyGrouping,
        center: &str,
        scale: &str,
        ddof: u32,
        eps: f64,
        singleton: &str,
        nan: &str,
        num_threads: usize,
        batch_std: Option<f64>,
        moments: Option<MomentsIn<'_>>,
    ) -> PyResult<()> {
        let mut p = parse_params(center, scale, ddof, eps, singleton, nan, num_threads)?;
        p.batch_std = batch_std;
        let ms = moments.map(records).transpose()?;
        let ms = ms.as_deref();
        let g = &grouping.inner;
        guard(|| {
            with_typed(
                rewards,
                out,
                |x, o| py.detach(|| advantage::advantages_with(x, o, g, &p, ms)),
                |x, o| py.detach(|| advantage::advantages_with(x, o, g, &p, ms)),
            )
        })
    }

    /// `advantage::advantages_offsets` of `xs` into `os` over `offsets`, read in place.
    fn offsets_into<T: Real>(
        py: Python<'_>,
        xs: &[T],
        os: &mut [T],
        offsets: &Bound<'_, PyArray1<i64>>,
        p: &Params,
    ) -> PyResult<()> {
        let offs = read(offsets, "offsets")?;
        let ofs = offs.as_slice()?;
        py.detach(|| advantage::advantages_offsets(xs, os, ofs, p))
            .map_err(|e| match e {
                advantage::OffsetsError::Layout(e) => PyErr::from(e),
                advantage::OffsetsError::Advantage(e) => PyErr::from(e),
            })
    }

    /// `advantages` over the ragged groups of `offsets` (contiguous 1-D int64), read in place
    /// (`advantage::advantages_offsets`): the layout's checks and errors, without its copy.
    #[pyfunction]
    #[pyo3(signature = (rewards, out, offsets, center, scale, ddof, eps, singleton, nan, num_threads, batch_std=None))]
    #[allow(clippy::too_many_arguments)]
    fn advantages_offsets(
        py: Python<'_>,
        rewards: &Bound<'_, PyAny>,
        out: &Bound<'_, PyAny>,
        offsets: &Bound<'_, PyArray1<i64>>,
        center: &str,
        scale: &str,
        ddof: u32,
        eps: f64,
        singleton: &str,
        nan: &str,
        num_threads: usize,
        batch_std: Option<f64>,
    ) -> PyResult<()> {
        let mut p = parse_params(center, scale, ddof, eps, singleton, nan, num_threads)?;
        p.batch_std = batch_std;
        guard(|| {
            with_typed(
                rewards,
                out,
                |x, o| offsets_into(py, x, o, offsets, &p),
                |x, o| offsets_into(py, x, o, offsets, &p),
            )
        })
    }

    type Stats<'py> = (
        Bound<'py, PyArray1<i64>>,
        Bound<'py, PyArray1<f64>>,
        Bound<'py, PyArray1<f64>>,
    );

    fn group_stats_typed<'py, T: Real + Element>(
        py: Python<'py>,
        rewards: &Bound<'py, PyArray1<T>>,
        grouping: &Grouping,
        p: &Params,
    ) -> PyResult<Stats<'py>> {
        let k = grouping.n_groups();
        let (mut c, mut m, mut s) = (vec![0i64; k], vec![0f64; k], vec![0f64; k]);
        let x = read(rewards, "rewards")?;
        let xs = x.as_slice()?;
        py.detach(|| advantage::group_stats(xs, grouping, p, &mut c, &mut m, &mut s))?;
        Ok((
            PyArray1::from_vec(py, c),
            PyArray1::from_vec(py, m),
            PyArray1::from_vec(py, s),
        ))
    }

    /// Per-group (count, mean, std) arrays.
    #[pyfunction]
    fn group_stats<'py>(
        py: Python<'py>,
        rewards: &Bound<'py, PyAny>,
        grouping: &PyGrouping,
        ddof: u32,
        nan: &str,
        num_threads: usize,
    ) -> PyResult<Stats<'py>> {
        let p = parse_params("mean", "group", ddof, 0.0, "zero", nan, num_threads)?;
        guard(|| {
            if let Ok(r) = rewards.cast::<PyArray1<f32>>() {
                group_stats_typed(py, r, &grouping.inner, &p)
            } else if let Ok(r) = rewards.cast::<PyArray1<f64>>() {
                group_stats_typed(py, r, &grouping.inner, &p)
            } else {
                Err(PyTypeError::new_err(
                    "rewards must be a 1-D float32 or float64 array",
                ))
            }
        })
    }

    /// Batch moments: (count, mean, m2) of the rewards and (residual_count, residual_m2) of
    /// the group-centred residuals.
    #[pyfunction]
    fn batch_moments(
        py: Python<'_>,
        rewards: &Bound<'_, PyAny>,
        grouping: &PyGrouping,
        nan: &str,
        num_threads: usize,
    ) -> PyResult<(u64, f64, f64, u64, f64)> {
        let p = parse_params("mean", "group", 0, 0.0, "zero", nan, num_threads)?;
        let g = &grouping.inner;
        let b = guard(|| {
            Ok(if let Ok(r) = rewards.cast::<PyArray1<f32>>() {
                let x = read(r, "rewards")?;
                let xs = x.as_slice()?;
                py.detach(|| advantage::batch_moments(xs, g, &p))?
            } else if let Ok(r) = rewards.cast::<PyArray1<f64>>() {
                let x = read(r, "rewards")?;
                let xs = x.as_slice()?;
                py.detach(|| advantage::batch_moments(xs, g, &p))?
            } else {
                return Err(PyTypeError::new_err(
                    "rewards must be a 1-D float32 or float64 array",
                ));
            })
        })?;
        Ok((
            b.rewards.count as u64,
            b.rewards.mean,
            b.rewards.m2_unscaled(),
            b.residual.count as u64,
            b.residual.m2_unscaled(),
        ))
    }

    // ---- the moments stage (stats.rs): (count, mean, m2, scale) float64 arrays ----

    // Bound arrays, borrowed with `read` (a borrow conflict raises, never panics).
    type MomentsIn<'py> = (
        Bound<'py, PyArray1<f64>>,
        Bound<'py, PyArray1<f64>>,
        Bound<'py, PyArray1<f64>>,
        Bound<'py, PyArray1<f64>>,
    );
    type MomentsOut<'py> = (
        Bound<'py, PyArray1<f64>>,
        Bound<'py, PyArray1<f64>>,
        Bound<'py, PyArray1<f64>>,
        Bound<'py, PyArray1<f64>>,
    );

    fn records(m: MomentsIn<'_>) -> PyResult<Vec<Moments>> {
        let (c, mu, m2, s) = (
            read(&m.0, "moments")?,
            read(&m.1, "moments")?,
            read(&m.2, "moments")?,
            read(&m.3, "moments")?,
        );
        let (c, mu, m2, s) = (c.as_slice()?, mu.as_slice()?, m2.as_slice()?, s.as_slice()?);
        if mu.len() != c.len() || m2.len() != c.len() || s.len() != c.len() {
            return Err(value_error(
                "moments: count, mean, m2 and scale differ in length",
            ));
        }
        Ok((0..c.len())
            .map(|g| Moments {
                count: c[g],
                mean: mu[g],
                m2: m2[g],
                scale: s[g],
            })
            .collect())
    }

    fn arrays<'py>(py: Python<'py>, ms: &[Moments]) -> MomentsOut<'py> {
        let col = |f: fn(&Moments) -> f64| PyArray1::from_iter(py, ms.iter().map(f));
        (
            col(|m| m.count),
            col(|m| m.mean),
            col(|m| m.m2),
            col(|m| m.scale),
        )
    }

    /// Per-group moments (count, mean, m2, scale); `weights`: float64 frequency weights.
    #[pyfunction]
    #[pyo3(signature = (rewards, grouping, nan, weights, num_threads))]
    fn group_moments<'py>(
        py: Python<'py>,
        rewards: &Bound<'py, PyAny>,
        grouping: &PyGrouping,
        nan: &str,
        weights: Option<Bound<'py, PyArray1<f64>>>,
        num_threads: usize,
    ) -> PyResult<MomentsOut<'py>> {
        let p = parse_params("mean", "group", 0, 0.0, "zero", nan, num_threads)?;
        let wr = weights.as_ref().map(|w| read(w, "weights")).transpose()?;
        let w = wr.as_ref().map(|w| w.as_slice()).transpose()?;
        let g = &grouping.inner;
        let ms = guard(|| {
            if let Ok(r) = rewards.cast::<PyArray1<f32>>() {
                let x = read(r, "rewards")?;
                let xs = x.as_slice()?;
                Ok(py.detach(|| advantage::group_moments(xs, g, &p, w))?)
            } else if let Ok(r) = rewards.cast::<PyArray1<f64>>() {
                let x = read(r, "rewards")?;
                let xs = x.as_slice()?;
                Ok(py.detach(|| advantage::group_moments(xs, g, &p, w))?)
            } else {
                Err(PyTypeError::new_err(
                    "rewards must be a 1-D float32 or float64 array",
                ))
            }
        })?;
        Ok(arrays(py, &ms))
    }

    /// Elementwise Chan merge of two moment records of equal length.
    #[pyfunction]
    fn merge_moments<'py>(
        py: Python<'py>,
        a: MomentsIn<'py>,
        b: MomentsIn<'py>,
    ) -> PyResult<MomentsOut<'py>> {
        let (a, b) = (records(a)?, records(b)?);
        if a.len() != b.len() {
            return Err(value_error(format!(
                "cannot merge moments of {} and {} groups",
                a.len(),
                b.len()
            )));
        }
        let ms: Vec<Moments> = a.iter().zip(&b).map(|(a, b)| a.merge(*b)).collect();
        Ok(arrays(py, &ms))
    }

    /// The guarded standard deviation of each record (NaN where count <= ddof).
    #[pyfunction]
    fn moments_std<'py>(
        py: Python<'py>,
        m: MomentsIn<'py>,
        ddof: u32,
    ) -> PyResult<Bound<'py, PyArray1<f64>>> {
        let ms = records(m)?;
        Ok(PyArray1::from_iter(py, ms.iter().map(|m| m.std(ddof))))
    }

    // ---- token-level layouts (token.rs) ----

    /// Offsets of sequences over `n` tokens (validated like group offsets; empty allowed).
    fn token_offsets(offsets: &[i64], n: usize) -> PyResult<Vec<usize>> {
        if n > 0 {
            Grouping::ragged(n, offsets)?;
        } else if offsets.is_empty() || offsets.iter().any(|&o| o != 0) {
            return Err(value_error(
                "offsets must start at 0 and end at the number of tokens",
            ));
        }
        Ok(offsets.iter().map(|&o| o as usize).collect())
    }

    /// Finite token rewards of sequence `row` whose sum leaves `T`'s range: the overflow
    /// error (`index` = the sequence), under every NaN policy, never an "inf reward".
    fn score_overflow<T: Real>(row: usize) -> PyErr {
        typed_error(
            "AdvantageOverflowError",
            format!(
                "the token rewards of sequence {row} sum beyond the range of {}; rescale the rewards",
                if T::MAX_F64 == f64::MAX { "float64" } else { "float32" }
            ),
            move |kw| kw.set_item("index", row),
        )
    }

    fn token_scores_typed<'py, T: Real + Element>(
        py: Python<'py>,
        tokens: &Bound<'py, PyAny>,
        offsets: Option<&Bound<'py, PyArray1<i64>>>,
        num_threads: usize,
    ) -> PyResult<Option<Bound<'py, PyArray1<T>>>> {
        let num_threads = threads_arg(num_threads)?;
        if let Ok(t) = tokens.cast::<numpy::PyArray2<T>>() {
            let t = read(t, "token rewards")?;
            let (rows, width) = (t.shape()[0], t.shape()[1]);
            let ts = t.as_slice()?;
            let mut out = vec![T::zero(); rows];
            py.detach(|| token::row_sums(ts, width, num_threads, &mut out))
                .map_err(score_overflow::<T>)?;
            return Ok(Some(PyArray1::from_vec(py, out)));
        }
        if let (Ok(t), Some(offsets)) = (tokens.cast::<PyArray1<T>>(), offsets) {
            let t = read(t, "token rewards")?;
            let ts = t.as_slice()?;
            let offs = token_offsets(read(offsets, "offsets")?.as_slice()?, ts.len())?;
            let mut out = vec![T::zero(); offs.len() - 1];
            py.detach(|| token::segment_sums(ts, &offs, num_threads, &mut out))
                .map_err(score_overflow::<T>)?;
            return Ok(Some(PyArray1::from_vec(py, out)));
        }
        Ok(None)
    }

    /// Per-sequence scores: row sums of a (bs, L) float array, or segment sums of flat tokens
    /// given `offsets` (int64, bs + 1 entries). Accumulated in f64, returned in the input dtype.
    #[pyfunction]
    #[pyo3(signature = (tokens, offsets, num_threads))]
    fn token_scores<'py>(
        py: Python<'py>,
        tokens: &Bound<'py, PyAny>,
        offsets: Option<Bound<'py, PyArray1<i64>>>,
        num_threads: usize,
    ) -> PyResult<Bound<'py, PyAny>> {
        guard(|| {
            if let Some(a) = token_scores_typed::<f32>(py, tokens, offsets.as_ref(), num_threads)? {
                return Ok(a.into_any());
            }
            if let Some(a) = token_scores_typed::<f64>(py, tokens, offsets.as_ref(), num_threads)? {
                return Ok(a.into_any());
            }
            Err(PyTypeError::new_err(
                "token rewards must be a float32/float64 array: 2-D, or 1-D with offsets",
            ))
        })
    }

    fn broadcast_typed<T: Real + Element>(
        py: Python<'_>,
        adv: &Bound<'_, PyArray1<T>>,
        mask: Option<&Bound<'_, PyAny>>,
        offsets: Option<Bound<'_, PyArray1<i64>>>,
        out: &Bound<'_, PyAny>,
        num_threads: usize,
    ) -> PyResult<()> {
        let num_threads = threads_arg(num_threads)?;
        let adv = read(adv, "advantages")?;
        let a = adv.as_slice()?;
        let out = out
            .cast::<numpy::PyArrayDyn<T>>()
            .map_err(|_| PyTypeError::new_err("out must have the rewards' dtype"))?;
        let mut o = write(out, "out")?;
        let os = o.as_slice_mut()?;
        let n = os.len();
        with_mask::<T, _>(mask, n, |m| {
            broadcast_layout(py, a, m, offsets, os, num_threads)
        })
    }

    fn broadcast_layout<T: Real + Element>(
        py: Python<'_>,
        a: &[T],
        m: &token::Mask<'_, T>,
        offsets: Option<Bound<'_, PyArray1<i64>>>,
        os: &mut [T],
        num_threads: usize,
    ) -> PyResult<()> {
        match offsets {
            Some(offsets) => {
                let offs = token_offsets(read(&offsets, "offsets")?.as_slice()?, os.len())?;
                if offs.len() != a.len() + 1 {
                    return Err(value_error(
                        "offsets must have one more entry than there are sequences",
                    ));
                }
                py.detach(|| token::broadcast_segments(a, &offs, m, num_threads, os));
            }
            None => {
                if a.is_empty() || !os.len().is_multiple_of(a.len()) {
                    return Err(value_error("out must hold one row per sequence"));
                }
                let width = os.len() / a.len();
                py.detach(|| token::broadcast_rows(a, m, width, num_threads, os));
            }
        }
        Ok(())
    }

    /// out[row, t] = adv[row] * mask[row, t] over the rows of a contiguous (bs, L) `out`, or
    /// with `offsets` the same over flat segments. mask: uint8 flags, the dtype of `adv`, or None.
    #[pyfunction]
    #[pyo3(signature = (adv, mask, offsets, out, num_threads))]
    fn broadcast_tokens(
        py: Python<'_>,
        adv: &Bound<'_, PyAny>,
        mask: Option<&Bound<'_, PyAny>>,
        offsets: Option<Bound<'_, PyArray1<i64>>>,
        out: &Bound<'_, PyAny>,
        num_threads: usize,
    ) -> PyResult<()> {
        guard(|| {
            if let Ok(a) = adv.cast::<PyArray1<f32>>() {
                broadcast_typed(py, a, mask, offsets, out, num_threads)
            } else if let Ok(a) = adv.cast::<PyArray1<f64>>() {
                broadcast_typed(py, a, mask, offsets, out, num_threads)
            } else {
                Err(PyTypeError::new_err(
                    "advantages must be a 1-D float32/float64 array",
                ))
            }
        })
    }

    // ---- tokens (issue 12): masked whitening (whiten.rs) ----

    /// Run `f` with the response mask of a token pass: None, uint8 flags, or values of `T`.
    fn with_mask<T: Real + Element, R>(
        mask: Option<&Bound<'_, PyAny>>,
        len: usize,
        f: impl FnOnce(&token::Mask<'_, T>) -> PyResult<R>,
    ) -> PyResult<R> {
        let check = |l: usize| {
            if l != len {
                return Err(value_error(format!(
                    "the response mask has {l} entries, the values {len}"
                )));
            }
            Ok(())
        };
        match mask {
            None => f(&token::Mask::None),
            Some(m) => {
                if let Ok(a) = m.cast::<numpy::PyArrayDyn<u8>>() {
                    let r = read(a, "response_mask")?;
                    let s = r.as_slice()?;
                    check(s.len())?;
                    f(&token::Mask::Flags(s))
                } else if let Ok(a) = m.cast::<numpy::PyArrayDyn<T>>() {
                    let r = read(a, "response_mask")?;
                    let s = r.as_slice()?;
                    check(s.len())?;
                    f(&token::Mask::Values(s))
                } else if let Ok(a) = m.cast::<numpy::PyArrayDyn<u64>>() {
                    // int64 as verl passes it (viewed as uint64): read in the pass, not converted
                    let r = read(a, "response_mask")?;
                    let s = r.as_slice()?;
                    check(s.len())?;
                    f(&token::Mask::Wide(token::Wide::B8(s)))
                } else if let Ok(a) = m.cast::<numpy::PyArrayDyn<u32>>() {
                    let r = read(a, "response_mask")?;
                    let s = r.as_slice()?;
                    check(s.len())?;
                    f(&token::Mask::Wide(token::Wide::B4(s)))
                } else if let Ok(a) = m.cast::<numpy::PyArrayDyn<u16>>() {
                    let r = read(a, "response_mask")?;
                    let s = r.as_slice()?;
                    check(s.len())?;
                    f(&token::Mask::Wide(token::Wide::B2(s)))
                } else {
                    Err(PyTypeError::new_err(
                        "the mask must be unsigned integer flags (uint8/16/32/64) or of the values' dtype",
                    ))
                }
            }
        }
    }

    fn masked_whiten_typed<T: Real + Element>(
        py: Python<'_>,
        values: &Bound<'_, numpy::PyArrayDyn<T>>,
        mask: Option<&Bound<'_, PyAny>>,
        out: &Bound<'_, PyAny>,
        p: crate::whiten::WhitenParams,
    ) -> PyResult<(f64, f64)> {
        let v = read(values, "values")?;
        let xs = v.as_slice()?;
        let out = out
            .cast::<numpy::PyArrayDyn<T>>()
            .map_err(|_| PyTypeError::new_err("out must have the values' dtype"))?;
        let mut o = write(out, "out")?;
        let os = o.as_slice_mut()?;
        if os.len() != xs.len() {
            return Err(value_error("out must have as many entries as the values"));
        }
        with_mask::<T, _>(mask, xs.len(), |m| {
            Ok(py.detach(|| crate::whiten::masked_whiten(xs, m, &p, os))?)
        })
    }

    /// Whiten contiguous float32/float64 `values` over the tokens selected by `mask` (None,
    /// uint8 flags or weights of the values' dtype) into `out`; returns (mean, multiplier).
    #[pyfunction]
    #[pyo3(signature = (values, mask, out, shift_mean, scale, unbiased, eps, clamp, apply_mask, propagate, num_threads))]
    #[allow(clippy::too_many_arguments)]
    fn masked_whiten(
        py: Python<'_>,
        values: &Bound<'_, PyAny>,
        mask: Option<&Bound<'_, PyAny>>,
        out: &Bound<'_, PyAny>,
        shift_mean: bool,
        scale: bool,
        unbiased: bool,
        eps: f64,
        clamp: bool,
        apply_mask: bool,
        propagate: bool,
        num_threads: usize,
    ) -> PyResult<(f64, f64)> {
        guard(|| {
            if !(eps.is_finite() && eps >= 0.0) {
                return Err(value_error(format!(
                    "eps must be finite and >= 0, got {eps}"
                )));
            }
            let p = crate::whiten::WhitenParams {
                shift_mean,
                scale,
                unbiased,
                eps,
                clamp,
                apply_mask,
                propagate,
                threads: threads_arg(num_threads)?,
            };
            if let Ok(v) = values.cast::<numpy::PyArrayDyn<f32>>() {
                masked_whiten_typed(py, v, mask, out, p)
            } else if let Ok(v) = values.cast::<numpy::PyArrayDyn<f64>>() {
                masked_whiten_typed(py, v, mask, out, p)
            } else {
                Err(PyTypeError::new_err(
                    "values must be a float32/float64 array",
                ))
            }
        })
    }

    // ---- tokens (issue 12): reverse scans over responses (scan.rs) ----

    /// The responses of a scan: `offsets` (packed) or the rows of a 2-D (bs, L) input.
    fn scan_offsets(
        shape: &[usize],
        offsets: Option<&Bound<'_, PyArray1<i64>>>,
    ) -> PyResult<Vec<usize>> {
        let n: usize = shape.iter().product();
        match offsets {
            Some(o) => {
                let offs = token_offsets(read(o, "offsets")?.as_slice()?, n)?;
                if offs.len() < 2 {
                    return Err(value_error("offsets must name at least one response"));
                }
                Ok(offs)
            }
            None if shape.len() == 2 && shape[0] > 0 => {
                Ok((0..=shape[0]).map(|i| i * shape[1]).collect())
            }
            None => Err(value_error(
                "token arrays must be 2-D (bs, L) and non-empty, or 1-D with offsets",
            )),
        }
    }

    /// `a` as an array of `T` with `n` entries (an output or input of a scan).
    fn typed_like<'py, T: Real + Element>(
        a: &Bound<'py, PyAny>,
        what: &str,
        n: usize,
    ) -> PyResult<Bound<'py, numpy::PyArrayDyn<T>>> {
        let a = a
            .cast::<numpy::PyArrayDyn<T>>()
            .map_err(|_| PyTypeError::new_err(format!("{what} must have the rewards' dtype")))?
            .clone();
        if a.len() != n {
            return Err(value_error(format!(
                "{what} must have as many entries as the rewards"
            )));
        }
        Ok(a)
    }

    #[allow(clippy::too_many_arguments)]
    fn scan_typed<T: Real + Element>(
        py: Python<'_>,
        rewards: &Bound<'_, numpy::PyArrayDyn<T>>,
        values: Option<&Bound<'_, PyAny>>,
        mask: Option<&Bound<'_, PyAny>>,
        offsets: Option<&Bound<'_, PyArray1<i64>>>,
        out: &Bound<'_, PyAny>,
        out2: Option<&Bound<'_, PyAny>>,
        p: crate::scan::ScanParams,
    ) -> PyResult<()> {
        let r = read(rewards, "token_level_rewards")?;
        let offs = scan_offsets(r.shape(), offsets)?;
        let rs = r.as_slice()?;
        let n = rs.len();
        let typed = |a, what| typed_like::<T>(a, what, n);
        let out = typed(out, "out")?;
        let mut o = write(&out, "out")?;
        let os = o.as_slice_mut()?;
        with_mask::<T, _>(mask, n, |m| match (values, out2) {
            (Some(v), Some(o2)) => {
                let v = typed(v, "values")?;
                let vr = read(&v, "values")?;
                let vs = vr.as_slice()?;
                let o2 = typed(o2, "returns")?;
                let mut w2 = write(&o2, "returns")?;
                let os2 = w2.as_slice_mut()?;
                Ok(py.detach(|| crate::scan::gae(rs, vs, m, &offs, &p, os, os2))?)
            }
            (None, None) => {
                Ok(py.detach(|| crate::scan::discounted_returns(rs, m, &offs, &p, os))?)
            }
            _ => Err(value_error("gae needs values and a second output")),
        })
    }

    /// The scan parameters of both scan bindings (gamma and lam finite, the thread count).
    fn scan_params(
        gamma: f64,
        lam: f64,
        unmasked_zero: bool,
        check: bool,
        num_threads: usize,
    ) -> PyResult<crate::scan::ScanParams> {
        for (name, v) in [("gamma", gamma), ("lam", lam)] {
            if !v.is_finite() {
                return Err(value_error(format!("{name} must be finite, got {v}")));
            }
        }
        Ok(crate::scan::ScanParams {
            gamma,
            lam,
            unmasked: if unmasked_zero {
                crate::scan::Unmasked::Zero
            } else {
                crate::scan::Unmasked::Skip
            },
            check,
            threads: threads_arg(num_threads)?,
        })
    }

    /// Discounted returns (values None) or GAE (values and `returns_out` given) of each
    /// response: rows of a 2-D float32/float64 array, or segments of a 1-D one by `offsets`.
    #[pyfunction]
    #[pyo3(signature = (rewards, values, mask, offsets, out, returns_out, gamma, lam, unmasked_zero, check, num_threads))]
    #[allow(clippy::too_many_arguments)]
    fn token_scan(
        py: Python<'_>,
        rewards: &Bound<'_, PyAny>,
        values: Option<&Bound<'_, PyAny>>,
        mask: Option<&Bound<'_, PyAny>>,
        offsets: Option<Bound<'_, PyArray1<i64>>>,
        out: &Bound<'_, PyAny>,
        returns_out: Option<&Bound<'_, PyAny>>,
        gamma: f64,
        lam: f64,
        unmasked_zero: bool,
        check: bool,
        num_threads: usize,
    ) -> PyResult<()> {
        guard(|| {
            let p = scan_params(gamma, lam, unmasked_zero, check, num_threads)?;
            if let Ok(r) = rewards.cast::<numpy::PyArrayDyn<f32>>() {
                scan_typed(py, r, values, mask, offsets.as_ref(), out, returns_out, p)
            } else if let Ok(r) = rewards.cast::<numpy::PyArrayDyn<f64>>() {
                scan_typed(py, r, values, mask, offsets.as_ref(), out, returns_out, p)
            } else {
                Err(PyTypeError::new_err(
                    "token rewards must be a float32/float64 array",
                ))
            }
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn fused_typed<T: Real + Element>(
        py: Python<'_>,
        mode: &str,
        rewards: &Bound<'_, numpy::PyArrayDyn<T>>,
        values: Option<&Bound<'_, PyAny>>,
        baselines: Option<&Bound<'_, PyAny>>,
        mask: Option<&Bound<'_, PyAny>>,
        out: &Bound<'_, PyAny>,
        out2: &Bound<'_, PyAny>,
        p: crate::scan::ScanParams,
    ) -> PyResult<()> {
        use crate::whiten::{
            affine_from, affine_in_place, write_affine, write_affine_spans, WhitenParams,
        };
        let r = read(rewards, "token_level_rewards")?;
        let offs = scan_offsets(r.shape(), None)?;
        let rs = r.as_slice()?;
        let n = rs.len();
        let typed = |a, what| typed_like::<T>(a, what, n);
        let out = typed(out, "out")?;
        let mut o = write(&out, "out")?;
        let os = o.as_slice_mut()?;
        let out2 = typed(out2, "out2")?;
        let mut o2 = write(&out2, "out2")?;
        let os2 = o2.as_slice_mut()?;
        let threads = crate::parallel::resolve_threads(p.threads);
        // verl's masked_whiten: unbiased variance, rsqrt(var + 1e-8)
        let wp = WhitenParams {
            threads,
            apply_mask: mode == "returns_whiten",
            ..Default::default()
        };
        let missing = |what: &str| value_error(format!("{mode} needs {what}"));
        with_mask::<T, _>(mask, n, |m| match mode {
            "gae_whiten" => {
                let v = typed(values.ok_or_else(|| missing("values"))?, "values")?;
                let vr = read(&v, "values")?;
                let vs = vr.as_slice()?;
                Ok(py.detach(|| {
                    let stats = crate::scan::gae_fused(rs, vs, m, &offs, &p, os, os2, true)?;
                    let stats = stats.unwrap_or(Ok(crate::stats::Moments::EMPTY));
                    let (mean, k) = affine_from(stats, &wp)?;
                    affine_in_place(os, mean, k, 0.0, threads);
                    Ok::<(), AdvError>(())
                })?)
            }
            "returns_whiten" => Ok(py.detach(|| {
                let fused = crate::scan::returns_fused(rs, m, &offs, &p, os, None, true)?;
                let (stats, spans) = fused.unwrap_or((Ok(crate::stats::Moments::EMPTY), None));
                let (mean, k) = affine_from(stats, &wp)?;
                match spans {
                    // each row's flags one run (verl's responses): the write reads no mask
                    Some(sp) => {
                        let width = n / sp.len();
                        write_affine_spans(os, &sp, width, m, mean, k, 0.0, threads, os2)
                    }
                    None => write_affine(os, m, mean, k, 0.0, true, threads, os2),
                }
                Ok::<(), AdvError>(())
            })?),
            "returns_minus" => {
                let b = baselines
                    .ok_or_else(|| missing("baselines"))?
                    .cast::<PyArray1<T>>()
                    .map_err(|_| PyTypeError::new_err("baselines must have the rewards' dtype"))?
                    .clone();
                let br = read(&b, "baselines")?;
                let bs = br.as_slice()?;
                if bs.len() + 1 != offs.len() {
                    return Err(value_error("baselines must hold one value per response"));
                }
                Ok(py.detach(|| {
                    crate::scan::returns_fused(rs, m, &offs, &p, os, Some((bs, os2)), false)
                        .map(|_| ())
                })?)
            }
            _ => Err(value_error(format!("unknown fused token pass {mode:?}"))),
        })
    }

    /// verl's token estimators in one scan over (bs, L) rows (plus one write where they
    /// whiten), inputs checked: "gae_whiten": GAE advantages into `out`, whitened over the
    /// mask in place, returns into `out2`; "returns_whiten": discounted returns into `out`,
    /// `whiten(out) * mask` into `out2`; "returns_minus": returns into `out`,
    /// `out - baselines[row] * mask` into `out2`.
    #[pyfunction]
    #[pyo3(signature = (mode, rewards, values, baselines, mask, out, out2, gamma, lam, unmasked_zero, num_threads))]
    #[allow(clippy::too_many_arguments)]
    fn token_scan_fused(
        py: Python<'_>,
        mode: &str,
        rewards: &Bound<'_, PyAny>,
        values: Option<&Bound<'_, PyAny>>,
        baselines: Option<&Bound<'_, PyAny>>,
        mask: Option<&Bound<'_, PyAny>>,
        out: &Bound<'_, PyAny>,
        out2: &Bound<'_, PyAny>,
        gamma: f64,
        lam: f64,
        unmasked_zero: bool,
        num_threads: usize,
    ) -> PyResult<()> {
        guard(|| {
            let p = scan_params(gamma, lam, unmasked_zero, true, num_threads)?;
            if let Ok(r) = rewards.cast::<numpy::PyArrayDyn<f32>>() {
                fused_typed(py, mode, r, values, baselines, mask, out, out2, p)
            } else if let Ok(r) = rewards.cast::<numpy::PyArrayDyn<f64>>() {
                fused_typed(py, mode, r, values, baselines, mask, out, out2, p)
            } else {
                Err(PyTypeError::new_err(
                    "token rewards must be a float32/float64 array",
                ))
            }
        })
    }

    /// Each row's mask weight over `rows` rows (bool/integer flags, float64 weights, as
    /// `with_mask` takes them), and for flags wider than a byte a uint8 copy of them into
    /// `flags_out` in the same pass (reinforce_plus_plus_baseline's whitening statistics).
    #[pyfunction]
    #[pyo3(signature = (mask, rows, flags_out, num_threads))]
    fn token_row_weights<'py>(
        py: Python<'py>,
        mask: &Bound<'py, PyAny>,
        rows: usize,
        flags_out: Option<&Bound<'py, PyAny>>,
        num_threads: usize,
    ) -> PyResult<Bound<'py, PyArray1<f64>>> {
        guard(|| {
            let threads = threads_arg(num_threads)?;
            let n: usize = mask.getattr("size")?.extract()?;
            if rows == 0 || !n.is_multiple_of(rows) {
                return Err(value_error("the mask must hold rows x width entries"));
            }
            let width = n / rows;
            let mut out = vec![0.0f64; rows];
            let fl = match flags_out {
                Some(f) => Some(
                    f.cast::<numpy::PyArrayDyn<u8>>()
                        .map_err(|_| PyTypeError::new_err("flags_out must be uint8"))?
                        .clone(),
                ),
                None => None,
            };
            let mut fw = match &fl {
                Some(f) => Some(write(f, "flags_out")?),
                None => None,
            };
            let fs = match fw.as_mut() {
                Some(w) => {
                    let s = w.as_slice_mut()?;
                    if s.len() != n {
                        return Err(value_error("flags_out must have the mask's size"));
                    }
                    Some(s)
                }
                None => None,
            };
            with_mask::<f64, _>(Some(mask), n, |m| {
                py.detach(|| token::row_weights(m, width, threads, &mut out, fs));
                Ok(())
            })?;
            Ok(PyArray1::from_vec(py, out))
        })
    }

    /// Each row's mask count and flat `(start, end)` span pairs, as `token_row_spans` returns them.
    type RowSpans<'py> = (Bound<'py, PyArray1<f64>>, Bound<'py, PyArray1<i64>>);

    /// Spans as Python sees them: `(start, end)` per row, `(-1, -1)` for a scattered row.
    fn spans_from(flat: &[i64], width: usize) -> PyResult<Vec<token::Span>> {
        flat.chunks_exact(2)
            .map(|p| match (p[0], p[1]) {
                (-1, -1) => Ok(token::Span::Scattered),
                (a, b) if 0 <= a && a <= b && b as usize <= width => Ok(token::Span::Run {
                    start: a as usize,
                    end: b as usize,
                }),
                _ => Err(value_error(
                    "spans must be (start, end) within a row, or (-1, -1)",
                )),
            })
            .collect()
    }

    /// Each row's number of set flags and its span ((start, end) of its one run of set flags,
    /// (-1, -1) where they are scattered) over `rows` rows of a bool/integer mask, in one pass
    /// over the mask: `broadcast_spans` then writes one-run rows without reading the mask.
    #[pyfunction]
    #[pyo3(signature = (mask, rows, num_threads))]
    fn token_row_spans<'py>(
        py: Python<'py>,
        mask: &Bound<'py, PyAny>,
        rows: usize,
        num_threads: usize,
    ) -> PyResult<RowSpans<'py>> {
        guard(|| {
            let threads = threads_arg(num_threads)?;
            let n: usize = mask.getattr("size")?.extract()?;
            if rows == 0 || !n.is_multiple_of(rows) {
                return Err(value_error("the mask must hold rows x width entries"));
            }
            if mask.cast::<numpy::PyArrayDyn<f64>>().is_ok() {
                return Err(PyTypeError::new_err("row spans need a bool/integer mask"));
            }
            let width = n / rows;
            let mut counts = vec![0.0f64; rows];
            let mut spans = vec![token::Span::Scattered; rows];
            with_mask::<f64, _>(Some(mask), n, |m| {
                py.detach(|| token::row_spans(m, width, threads, &mut counts, &mut spans));
                Ok(())
            })?;
            let flat = spans.iter().flat_map(|s| match *s {
                token::Span::Run { start, end } => [start as i64, end as i64],
                token::Span::Scattered => [-1, -1],
            });
            Ok((
                PyArray1::from_vec(py, counts),
                PyArray1::from_iter(py, flat),
            ))
        })
    }

    fn broadcast_spans_typed<T: Real + Element>(
        py: Python<'_>,
        adv: &Bound<'_, PyArray1<T>>,
        spans: &[i64],
        mask: &Bound<'_, PyAny>,
        out: &Bound<'_, PyAny>,
        num_threads: usize,
    ) -> PyResult<()> {
        let adv = read(adv, "advantages")?;
        let a = adv.as_slice()?;
        let out = out
            .cast::<numpy::PyArrayDyn<T>>()
            .map_err(|_| PyTypeError::new_err("out must have the advantages' dtype"))?;
        let mut o = write(out, "out")?;
        let os = o.as_slice_mut()?;
        if a.is_empty() || !os.len().is_multiple_of(a.len()) || spans.len() != 2 * a.len() {
            return Err(value_error(
                "out must hold one row, and spans one pair, per sequence",
            ));
        }
        let width = os.len() / a.len();
        let sp = spans_from(spans, width)?;
        with_mask::<T, _>(Some(mask), os.len(), |m| {
            if matches!(m, token::Mask::Values(_)) {
                return Err(PyTypeError::new_err("spans come with a bool/integer mask"));
            }
            py.detach(|| token::broadcast_spans(a, &sp, m, width, num_threads, os));
            Ok(())
        })
    }

    /// out[row, t] = adv[row] on the row's set flags, else 0, over a contiguous (bs, L) `out`:
    /// rows whose `spans` (from `token_row_spans`) are one run are written by position, the
    /// others read `mask` (bool/integer flags).
    #[pyfunction]
    #[pyo3(signature = (adv, spans, mask, out, num_threads))]
    fn broadcast_spans(
        py: Python<'_>,
        adv: &Bound<'_, PyAny>,
        spans: &Bound<'_, PyArray1<i64>>,
        mask: &Bound<'_, PyAny>,
        out: &Bound<'_, PyAny>,
        num_threads: usize,
    ) -> PyResult<()> {
        guard(|| {
            let threads = threads_arg(num_threads)?;
            let sr = read(spans, "spans")?;
            let sp = sr.as_slice()?;
            if let Ok(a) = adv.cast::<PyArray1<f32>>() {
                broadcast_spans_typed(py, a, sp, mask, out, threads)
            } else if let Ok(a) = adv.cast::<PyArray1<f64>>() {
                broadcast_spans_typed(py, a, sp, mask, out, threads)
            } else {
                Err(PyTypeError::new_err(
                    "advantages must be a 1-D float32/float64 array",
                ))
            }
        })
    }

    fn register_tokens(m: &Bound<'_, PyModule>) -> PyResult<()> {
        m.add_function(wrap_pyfunction!(token_row_weights, m)?)?;
        m.add_function(wrap_pyfunction!(token_row_spans, m)?)?;
        m.add_function(wrap_pyfunction!(broadcast_spans, m)?)?;
        m.add_function(wrap_pyfunction!(token_scan, m)?)?;
        m.add_function(wrap_pyfunction!(token_scan_fused, m)?)?;
        m.add_function(wrap_pyfunction!(masked_whiten, m)?)?;
        Ok(())
    }

    /// Set the default number of worker threads (0: GROUPADV_NUM_THREADS or the CPU count);
    /// at most MAX_THREADS.
    #[pyfunction]
    fn set_num_threads(n: &Bound<'_, PyAny>) -> PyResult<()> {
        let n: usize = n.extract().map_err(|_| {
            thread_error(format!(
                "the number of threads must be an integer from 0 to {}, got {n}",
                parallel::MAX_THREADS
            ))
        })?;
        parallel::set_default_threads(n).map_err(thread_error)
    }

    #[pyfunction]
    fn get_num_threads() -> PyResult<usize> {
        parallel::checked_default_threads().map_err(thread_error)
    }

    /// Panics inside the guard: proves (in the tests) that a panic surfaces as InternalError.
    #[pyfunction]
    fn _panic_for_test() -> PyResult<()> {
        guard(|| panic!("deliberate panic from groupadv._native._panic_for_test"))
    }

    /// (pools cached, their worker threads): the pool cache is bounded (tests check it).
    #[pyfunction]
    fn _pool_cache() -> (usize, usize) {
        parallel::cached_pools()
    }

    /// Test hook: does the compiled copy `isa` ("avx2", "avx512f") of the write pass give
    /// the generic pass's bits? False when this CPU cannot run it (nothing compared).
    #[pyfunction]
    fn _kernel_self_check(py: Python<'_>, isa: &str) -> PyResult<bool> {
        let isa = crate::Isa::named(isa).ok_or_else(|| value_error(format!("no copy {isa:?}")))?;
        py.detach(|| crate::kernel_self_check(isa))
            .map_err(value_error)
    }

    /// Called in a forked child (os.register_at_fork): the parent's worker threads are gone.
    #[pyfunction]
    fn _after_fork_in_child() {
        parallel::forget_pools_after_fork();
    }

    // ---- issue 12, group-level estimators (engineer "groups"): top-2 per group (select.rs)
    // and (N, K) multi-component rewards (components.rs) ----

    /// Pass@k advantages (verl grpo_passk): only each group's best reward gets
    /// `(max - second) / (std + eps)` (scale "group") or `max - second` (scale "none").
    #[pyfunction]
    #[pyo3(signature = (rewards, out, grouping, scale, ddof, eps, singleton, nan, num_threads))]
    #[allow(clippy::too_many_arguments)]
    fn passk_advantages(
        py: Python<'_>,
        rewards: &Bound<'_, PyAny>,
        out: &Bound<'_, PyAny>,
        grouping: &PyGrouping,
        scale: &str,
        ddof: u32,
        eps: f64,
        singleton: &str,
        nan: &str,
        num_threads: usize,
    ) -> PyResult<()> {
        let p = parse_params("mean", scale, ddof, eps, singleton, nan, num_threads)?;
        let g = &grouping.inner;
        guard(|| {
            with_typed(
                rewards,
                out,
                |x, o| py.detach(|| crate::select::passk_advantages(x, o, g, &p)),
                |x, o| py.detach(|| crate::select::passk_advantages(x, o, g, &p)),
            )
        })
    }

    /// Row sums `out[i] = sum_k weights[k] * rewards[i, k]` of a flat (N, K) buffer, into
    /// `out` (N values of the rewards' dtype; summed in f64).
    #[pyfunction]
    #[pyo3(signature = (rewards, k, weights, out, nan, num_threads))]
    fn component_sums(
        py: Python<'_>,
        rewards: &Bound<'_, PyAny>,
        k: usize,
        weights: &Bound<'_, PyArray1<f64>>,
        out: &Bound<'_, PyAny>,
        nan: &str,
        num_threads: usize,
    ) -> PyResult<()> {
        let p = parse_params("mean", "group", 0, 0.0, "zero", nan, num_threads)?;
        let w = read(weights, "weights")?;
        let ws = w.as_slice()?;
        let (nf, t) = (p.nonfinite, p.threads);
        guard(|| {
            with_typed(
                rewards,
                out,
                |x, o| py.detach(|| crate::components::weighted_row_sums(x, k, ws, o, nf, t)),
                |x, o| py.detach(|| crate::components::weighted_row_sums(x, k, ws, o, nf, t)),
            )
        })
    }

    /// `out[i] = sum_k weights[k] * A_k(i)`, A_k the group advantage of component k, of a
    /// flat (N, K) buffer (`out` has N values of the rewards' dtype).
    #[pyfunction]
    #[pyo3(signature = (rewards, k, weights, out, grouping, center, scale, ddof, eps, singleton, nan, num_threads))]
    #[allow(clippy::too_many_arguments)]
    fn normalize_then_sum(
        py: Python<'_>,
        rewards: &Bound<'_, PyAny>,
        k: usize,
        weights: &Bound<'_, PyArray1<f64>>,
        out: &Bound<'_, PyAny>,
        grouping: &PyGrouping,
        center: &str,
        scale: &str,
        ddof: u32,
        eps: f64,
        singleton: &str,
        nan: &str,
        num_threads: usize,
    ) -> PyResult<()> {
        let p = parse_params(center, scale, ddof, eps, singleton, nan, num_threads)?;
        let w = read(weights, "weights")?;
        let ws = w.as_slice()?;
        let g = &grouping.inner;
        guard(|| {
            with_typed(
                rewards,
                out,
                |x, o| py.detach(|| crate::components::normalize_then_sum(x, k, ws, o, g, &p)),
                |x, o| py.detach(|| crate::components::normalize_then_sum(x, k, ws, o, g, &p)),
            )
        })
    }

    // ---- optimal token baseline (issue 12, engineer "otb"): verl's
    // optimal_token_baseline / tir_optimal_token_baseline, core in `token_baseline` ----

    #[allow(clippy::too_many_arguments)]
    fn otb_typed<'py, T: Real + Element, M: crate::token_baseline::MaskValue + Element>(
        py: Python<'py>,
        rewards: &Bound<'py, PyArray1<T>>,
        mask: &Bound<'py, PyArray1<M>>,
        old_log_probs: &Bound<'py, PyAny>,
        sum_pi_squared: &Bound<'py, PyAny>,
        is_weights: Option<&Bound<'py, PyAny>>,
        codes: &Bound<'py, PyArray1<u32>>,
        n_groups: usize,
        rows: usize,
        p: &crate::token_baseline::Params,
        adv: &Bound<'py, PyAny>,
        returns: &Bound<'py, PyAny>,
    ) -> PyResult<()> {
        fn same<'py, T: Element>(
            a: &Bound<'py, PyAny>,
            what: &str,
        ) -> PyResult<Bound<'py, PyArray1<T>>> {
            a.cast::<PyArray1<T>>().cloned().map_err(|_| {
                PyTypeError::new_err(format!("{what} must be a 1-D array of the rewards' dtype"))
            })
        }
        let (lp, q) = (
            same(old_log_probs, "old_log_probs")?,
            same(sum_pi_squared, "sum_pi_squared")?,
        );
        let rho = is_weights
            .map(|w| same(w, "rollout_is_weights"))
            .transpose()?;
        let (a, r) = (same(adv, "adv out")?, same(returns, "returns out")?);
        let (rv, mv, lv, qv, cv) = (
            read(rewards, "token_level_rewards")?,
            read(mask, "response_mask")?,
            read(&lp, "old_log_probs")?,
            read(&q, "sum_pi_squared")?,
            read(codes, "codes")?,
        );
        let rhov = rho
            .as_ref()
            .map(|w| read(w, "rollout_is_weights"))
            .transpose()?;
        let mut av = write(&a, "adv out")?;
        let mut retv = write(&r, "returns out")?;
        let n = rv.len();
        if rows == 0 && n != 0 || rows != 0 && n % rows != 0 {
            return Err(value_error("the rewards must hold rows x width elements"));
        }
        let inp = crate::token_baseline::Inputs {
            rows,
            width: n.checked_div(rows).unwrap_or(0),
            rewards: rv.as_slice()?,
            mask: mv.as_slice()?,
            old_log_probs: lv.as_slice()?,
            sum_pi_squared: qv.as_slice()?,
            is_weights: match &rhov {
                Some(w) => Some(w.as_slice()?),
                None => None,
            },
        };
        let codes = cv.as_slice()?;
        let (ao, ro) = (av.as_slice_mut()?, retv.as_slice_mut()?);
        py.detach(|| crate::token_baseline::compute(&inp, codes, n_groups, p, ao, ro))?;
        Ok(())
    }

    /// The optimal token baseline of flat (rows x width) inputs into `adv` and `returns`
    /// (same dtype as the rewards, float32 or float64); `mask` uint8 (bool), int32, int64,
    /// float32 or float64 holding 0 and 1; `codes` (uint32) the group of each row, `align`
    /// "position" or "turn", `nan` "raise" or "propagate".
    #[pyfunction]
    #[pyo3(signature = (rewards, mask, old_log_probs, sum_pi_squared, is_weights, codes, n_groups,
                        rows, align, handle_zero_tail, eps, nan, adv, returns, num_threads))]
    #[allow(clippy::too_many_arguments)]
    fn optimal_token_baseline(
        py: Python<'_>,
        rewards: &Bound<'_, PyAny>,
        mask: &Bound<'_, PyAny>,
        old_log_probs: &Bound<'_, PyAny>,
        sum_pi_squared: &Bound<'_, PyAny>,
        is_weights: Option<&Bound<'_, PyAny>>,
        codes: &Bound<'_, PyArray1<u32>>,
        n_groups: usize,
        rows: usize,
        align: &str,
        handle_zero_tail: bool,
        eps: f64,
        nan: &str,
        adv: &Bound<'_, PyAny>,
        returns: &Bound<'_, PyAny>,
        num_threads: usize,
    ) -> PyResult<()> {
        use crate::token_baseline::{Align, Params as OtbParams};
        guard(|| {
            let p = OtbParams {
                align: match align {
                    "position" => Align::Position,
                    "turn" => Align::Turn,
                    _ => {
                        return Err(value_error(format!(
                            "align must be 'position' or 'turn', got {align:?}"
                        )))
                    }
                },
                handle_zero_tail,
                eps,
                nonfinite: match nan {
                    "raise" => NonFinite::Raise,
                    "propagate" => NonFinite::Propagate,
                    _ => {
                        return Err(value_error(format!(
                            "nan must be 'raise' or 'propagate', got {nan:?}"
                        )))
                    }
                },
                threads: threads_arg(num_threads)?,
            };
            // The mask's dtype picks the monomorphised pass (the first dtype it casts to).
            macro_rules! by_mask {
                ($r:expr) => {
                    by_mask!(@ $r; u8, i64, i32, f32, f64)
                };
                (@ $r:expr; $($t:ty),+) => {{
                    $(
                        if let Ok(m) = mask.cast::<PyArray1<$t>>() {
                            return otb_typed(
                                py,
                                $r,
                                m,
                                old_log_probs,
                                sum_pi_squared,
                                is_weights,
                                codes,
                                n_groups,
                                rows,
                                &p,
                                adv,
                                returns,
                            );
                        }
                    )+
                    Err(PyTypeError::new_err(
                        "mask must be a 1-D uint8/int32/int64/float32/float64 array",
                    ))
                }};
            }
            if let Ok(r) = rewards.cast::<PyArray1<f32>>() {
                by_mask!(r)
            } else if let Ok(r) = rewards.cast::<PyArray1<f64>>() {
                by_mask!(r)
            } else {
                Err(PyTypeError::new_err(
                    "rewards must be a 1-D float32/float64 array",
                ))
            }
        })
    }

    #[pymodule]
    fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
        m.add_class::<PyGrouping>()?;
        m.add_function(wrap_pyfunction!(grouping_uniform, m)?)?;
        m.add_function(wrap_pyfunction!(grouping_offsets, m)?)?;
        m.add_function(wrap_pyfunction!(grouping_ids_int, m)?)?;
        m.add_function(wrap_pyfunction!(grouping_ids_bytes, m)?)?;
        m.add_function(wrap_pyfunction!(grouping_ids_str, m)?)?;
        m.add_function(wrap_pyfunction!(advantages, m)?)?;
        m.add_function(wrap_pyfunction!(advantages_offsets, m)?)?;
        m.add_function(wrap_pyfunction!(group_stats, m)?)?;
        m.add_function(wrap_pyfunction!(batch_moments, m)?)?;
        m.add_function(wrap_pyfunction!(group_moments, m)?)?;
        m.add_function(wrap_pyfunction!(merge_moments, m)?)?;
        m.add_function(wrap_pyfunction!(moments_std, m)?)?;
        m.add_function(wrap_pyfunction!(token_scores, m)?)?;
        m.add_function(wrap_pyfunction!(broadcast_tokens, m)?)?;
        m.add_function(wrap_pyfunction!(set_num_threads, m)?)?;
        m.add_function(wrap_pyfunction!(get_num_threads, m)?)?;
        m.add_function(wrap_pyfunction!(_pool_cache, m)?)?;
        m.add_function(wrap_pyfunction!(_panic_for_test, m)?)?;
        m.add_function(wrap_pyfunction!(_grouping_restore, m)?)?;
        m.add("MAX_THREADS", parallel::MAX_THREADS)?;
        m.add_function(wrap_pyfunction!(_after_fork_in_child, m)?)?;
        m.add_function(wrap_pyfunction!(_kernel_self_check, m)?)?;
        register_tokens(m)?;
        // issue 12, group-level estimators (engineer "groups")
        m.add_function(wrap_pyfunction!(passk_advantages, m)?)?;
        m.add_function(wrap_pyfunction!(component_sums, m)?)?;
        m.add_function(wrap_pyfunction!(normalize_then_sum, m)?)?;
        // optimal token baseline (otb)
        m.add_function(wrap_pyfunction!(optimal_token_baseline, m)?)?;
        m.add("__version__", env!("CARGO_PKG_VERSION"))?;
        Ok(())
    }
}
