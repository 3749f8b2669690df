use super::*;

fn run<T: Real>(x: &[T], g: &Grouping, p: &Params) -> Result<Vec<T>, AdvError> {
    let mut out = vec![T::zero(); x.len()];
    advantages(x, &mut out, g, p).map(|_| out)
}

fn round4(v: &[f64]) -> Vec<f64> {
    v.iter().map(|x| (x * 1e4).round() / 1e4).collect()
}

#[test]
fn seed_examples() {
    let p = Params::default();
    let cases: [(&[f64], &[f64]); 3] = [
        (&[0.0, 1.0, 0.0, 1.0], &[-1.0, 1.0, -1.0, 1.0]),
        (
            &[0.2, 0.5, 0.8, 0.3, 0.7],
            &[-1.3156, 0.0, 1.3156, -0.8771, 0.8771],
        ),
        (&[-0.5, 0.0, 0.5, 1.0], &[-1.3416, -0.4472, 0.4472, 1.3416]),
    ];
    for (x, want) in cases {
        let g = Grouping::uniform(x.len(), x.len()).unwrap();
        let got = round4(&run(x, &g, &p).unwrap());
        let want: Vec<f64> = want
            .iter()
            .map(|w| if *w == 0.0 { 0.0 } else { *w })
            .collect();
        assert_eq!(got.iter().map(|v| v + 0.0).collect::<Vec<_>>(), want);
    }
}

#[test]
fn all_equal_groups_are_exactly_zero() {
    for eps in [0.0, 1e-9, 1e-6, 1e-4] {
        for scale in [Scale::Group, Scale::Batch, Scale::BatchResidual] {
            let p = Params {
                eps,
                scale,
                ..Params::default()
            };
            let x32 = [0.1f32; 8];
            let g = Grouping::uniform(8, 8).unwrap();
            assert!(
                run(&x32, &g, &p).unwrap().iter().all(|&v| v == 0.0),
                "f32 eps {eps}"
            );
            let x64 = [0.1f64; 7];
            let g = Grouping::uniform(7, 7).unwrap();
            assert!(
                run(&x64, &g, &p).unwrap().iter().all(|&v| v == 0.0),
                "f64 eps {eps}"
            );
        }
    }
}

#[test]
fn estimators_by_hand() {
    let x = [1.0f64, 2.0, 3.0, 6.0];
    let g = Grouping::uniform(4, 4).unwrap();
    // mean 3, population std sqrt(3.5)
    let dr = run(
        &x,
        &g,
        &Params {
            scale: Scale::None,
            ..Params::default()
        },
    )
    .unwrap();
    assert_eq!(dr, vec![-2.0, -1.0, 0.0, 3.0]);
    let loo = run(
        &x,
        &g,
        &Params {
            center: Center::LeaveOneOut,
            scale: Scale::None,
            ..Params::default()
        },
    )
    .unwrap();
    // r_i - mean of the others: 1 - 11/3, 2 - 10/3, 3 - 3, 6 - 2
    let want = [1.0 - 11.0 / 3.0, 2.0 - 10.0 / 3.0, 0.0, 4.0];
    for (a, b) in loo.iter().zip(want) {
        assert!((a - b).abs() < 1e-12, "{loo:?}");
    }
    let z1 = run(
        &x,
        &g,
        &Params {
            ddof: 1,
            eps: 1e-6,
            ..Params::default()
        },
    )
    .unwrap();
    let s1 = (14.0f64 / 3.0).sqrt();
    assert!((z1[3] - 3.0 / (s1 + 1e-6)).abs() < 1e-12);
    let none = run(
        &x,
        &g,
        &Params {
            center: Center::None,
            scale: Scale::None,
            ..Params::default()
        },
    )
    .unwrap();
    assert_eq!(none, x.to_vec());
}

#[test]
fn batch_scales_by_hand() {
    // groups [0, 2] and [10, 14]: means 1 and 12
    let x = [0.0f64, 2.0, 10.0, 14.0];
    let g = Grouping::uniform(4, 2).unwrap();
    let b = run(
        &x,
        &g,
        &Params {
            scale: Scale::Batch,
            ..Params::default()
        },
    )
    .unwrap();
    let mean = 6.5;
    let std = ((x.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>()) / 4.0).sqrt();
    assert!((b[3] - 2.0 / std).abs() < 1e-12);
    let r = run(
        &x,
        &g,
        &Params {
            scale: Scale::BatchResidual,
            ..Params::default()
        },
    )
    .unwrap();
    // residuals -1, 1, -2, 2 -> std sqrt(10/4)
    assert!((r[3] - 2.0 / 2.5f64.sqrt()).abs() < 1e-12);
    assert!((r[0] + 1.0 / 2.5f64.sqrt()).abs() < 1e-12);
}

#[test]
fn singleton_policies() {
    let x = [3.0f64, 1.0, 2.0];
    let g = Grouping::ragged(3, &[0, 1, 3]).unwrap();
    let zero = run(&x, &g, &Params::default()).unwrap();
    assert_eq!(zero[0], 0.0);
    let raw = run(
        &x,
        &g,
        &Params {
            singleton: Singleton::Raw,
            eps: 1e-6,
            ..Params::default()
        },
    )
    .unwrap();
    assert_eq!(raw[0], 3.0 / (1.0 + 1e-6));
    let err = run(
        &x,
        &g,
        &Params {
            singleton: Singleton::Error,
            ..Params::default()
        },
    )
    .unwrap_err();
    assert_eq!(err, AdvError::Singleton { group: 0, index: 0 });
}

#[test]
fn nonfinite_policies() {
    let x = [1.0f64, f64::NAN, 3.0, 4.0, 6.0, 8.0];
    let g = Grouping::uniform(6, 3).unwrap();
    let err = run(&x, &g, &Params::default()).unwrap_err();
    assert!(
        matches!(err, AdvError::NonFinite { index: 1, .. }),
        "{err:?}"
    );
    let prop = run(
        &x,
        &g,
        &Params {
            nonfinite: NonFinite::Propagate,
            ..Params::default()
        },
    )
    .unwrap();
    assert!(prop[..3].iter().all(|v| v.is_nan()));
    assert!(prop[3..].iter().all(|v| v.is_finite()));
    let omit = run(
        &x,
        &g,
        &Params {
            nonfinite: NonFinite::Omit,
            ..Params::default()
        },
    )
    .unwrap();
    assert_eq!(omit[..3], [-1.0, 0.0, 1.0]);
    let inf = [1.0f32, 2.0, f32::INFINITY, 0.0];
    let e = run(&inf, &Grouping::uniform(4, 2).unwrap(), &Params::default()).unwrap_err();
    assert!(matches!(e, AdvError::NonFinite { index: 2, .. }));
}

#[test]
fn permuted_layout_equals_contiguous() {
    let ids = [4i64, 9, 4, 9, 4, 2, 9, 2];
    let x = [0.5f64, 1.0, 0.0, 3.0, 1.0, 7.0, 2.0, 5.0];
    let (g, _) = Grouping::from_ids(&ids).unwrap();
    for center in [Center::Mean, Center::LeaveOneOut] {
        for scale in [Scale::Group, Scale::Batch, Scale::BatchResidual] {
            let p = Params {
                center,
                scale,
                ..Params::default()
            };
            let got = run(&x, &g, &p).unwrap();
            // Same groups, laid out contiguously by hand.
            let order = [0usize, 2, 4, 1, 3, 6, 5, 7];
            let xs: Vec<f64> = order.iter().map(|&i| x[i]).collect();
            let want = run(&xs, &Grouping::ragged(8, &[0, 3, 6, 8]).unwrap(), &p).unwrap();
            for (j, &i) in order.iter().enumerate() {
                assert!((got[i] - want[j]).abs() < 1e-14, "{center:?} {scale:?}");
            }
        }
    }
}

#[test]
fn parallel_equals_serial() {
    let n = 1 << 17;
    let x: Vec<f32> = (0..n).map(|i| ((i * 7919) % 1000) as f32 / 999.0).collect();
    let ids: Vec<i64> = (0..n as i64).map(|i| (i * 31) % 5000).collect();
    let layouts = [
        Grouping::uniform(n, 16).unwrap(),
        Grouping::ragged(
            n,
            &(0..=n as i64 / 8)
                .map(|g| (g * 8).min(n as i64))
                .collect::<Vec<_>>(),
        )
        .unwrap(),
        Grouping::from_ids(&ids).unwrap().0,
    ];
    for g in &layouts {
        for scale in [Scale::Group, Scale::BatchResidual] {
            let serial = run(
                &x,
                g,
                &Params {
                    scale,
                    threads: 1,
                    ..Params::default()
                },
            )
            .unwrap();
            let par = run(
                &x,
                g,
                &Params {
                    scale,
                    threads: 2,
                    ..Params::default()
                },
            )
            .unwrap();
            if scale == Scale::Group {
                assert_eq!(serial, par);
            } else {
                for (a, b) in serial.iter().zip(&par) {
                    assert!((a - b).abs() <= 1e-6 * a.abs().max(1.0));
                }
            }
        }
    }
}

#[test]
fn group_stats_by_hand() {
    let x = [1.0f64, 3.0, 5.0, f64::NAN];
    let g = Grouping::ragged(4, &[0, 2, 2, 3, 4]).unwrap();
    let (mut c, mut m, mut s) = (vec![0; 4], vec![0.0; 4], vec![0.0; 4]);
    let p = Params {
        nonfinite: NonFinite::Omit,
        ddof: 1,
        ..Params::default()
    };
    group_stats(&x, &g, &p, &mut c, &mut m, &mut s).unwrap();
    assert_eq!(c, vec![2, 0, 1, 0]);
    assert_eq!(m[0], 2.0);
    assert!((s[0] - 2f64.sqrt()).abs() < 1e-15);
    assert!(m[1].is_nan() && s[1].is_nan() && s[2].is_nan() && m[3].is_nan());
    let err = group_stats(&x, &g, &Params::default(), &mut c, &mut m, &mut s).unwrap_err();
    assert!(matches!(err, AdvError::NonFinite { index: 3, .. }));
}

#[test]
fn bad_parameters_and_lengths_are_errors() {
    let x = [1.0f64, 2.0];
    let g = Grouping::uniform(2, 2).unwrap();
    assert!(matches!(
        run(
            &x,
            &g,
            &Params {
                ddof: 2,
                ..Params::default()
            }
        ),
        Err(AdvError::BadParameter(_))
    ));
    assert!(matches!(
        run(
            &x,
            &g,
            &Params {
                eps: -1.0,
                ..Params::default()
            }
        ),
        Err(AdvError::BadParameter(_))
    ));
    assert!(matches!(
        run(
            &x,
            &g,
            &Params {
                eps: f64::NAN,
                ..Params::default()
            }
        ),
        Err(AdvError::BadParameter(_))
    ));
    let mut out = vec![0.0; 3];
    assert!(matches!(
        advantages(&x, &mut out, &g, &Params::default()),
        Err(AdvError::LengthMismatch { .. })
    ));
}

/// The layouts of the same groups: uniform, ragged, and interleaved labels (with the rewards
/// permuted accordingly). `run_all` returns each layout's advantages in the uniform order.
fn run_all<T: Real>(x: &[T], size: usize, p: &Params) -> Vec<Result<Vec<T>, AdvError>> {
    let n = x.len();
    let k = n / size;
    let offsets: Vec<i64> = (0..=k).map(|g| (g * size) as i64).collect();
    // Interleaved: reward i of group g at position i * k + g.
    let pos = |j: usize| (j % size) * k + j / size;
    let mut ids = vec![0i64; n];
    let mut xs = vec![x[0]; n];
    for j in 0..n {
        ids[pos(j)] = (j / size) as i64;
        xs[pos(j)] = x[j];
    }
    let (labelled, _) = Grouping::from_ids(&ids).unwrap();
    let back = |r: Result<Vec<T>, AdvError>| r.map(|a| (0..n).map(|j| a[pos(j)]).collect());
    vec![
        run(x, &Grouping::uniform(n, size).unwrap(), p),
        run(x, &Grouping::ragged(n, &offsets).unwrap(), p),
        back(run(&xs, &labelled, p)),
    ]
}

/// Issue 10: a subnormal spread whose mean is not an f64 (7.5e-324) gave [0, 1].
#[test]
fn subnormal_pair_is_minus_one_one() {
    for (x, eps) in [
        (vec![5e-324f64, 1e-323], 0.0),
        (vec![1e-323f64, 5e-324, 5e-324, 1e-323], 0.0),
        (vec![-5e-324f64, 0.0, 0.0, -5e-324], 0.0),
    ] {
        let want: Vec<f64> = x
            .chunks(2)
            .flat_map(|c| {
                if c[0] < c[1] {
                    [-1.0, 1.0]
                } else {
                    [1.0, -1.0]
                }
            })
            .collect();
        for got in run_all(
            &x,
            2,
            &Params {
                eps,
                ..Params::default()
            },
        ) {
            assert_eq!(got.unwrap(), want, "x {x:?}");
        }
        // Batch scales: the same residuals over the batch std (1/2 of the spread here).
        for scale in [Scale::Batch, Scale::BatchResidual] {
            let p = Params {
                scale,
                ..Params::default()
            };
            for got in run_all(&x, 2, &p) {
                let got = got.unwrap();
                assert!(
                    got.iter().zip(&want).all(|(a, b)| (a - b).abs() < 1e-12
                        || scale == Scale::Batch && a.signum() == b.signum()),
                    "{scale:?} {got:?}"
                );
            }
        }
    }
    // Centred or not, the general path keeps Dr. GRPO and RLOO on subnormals too.
    let p = Params {
        center: Center::LeaveOneOut,
        ..Params::default()
    };
    for got in run_all(&[5e-324f64, 1e-323], 2, &p) {
        assert_eq!(got.unwrap(), vec![-2.0, 2.0]);
    }
}

/// Issue 10: means of +-1.7e308 in a batch scale gave eight NaNs under nan="raise": the
/// batch moments overflow float64 (the means' difference), the documented overflow error.
#[test]
fn batch_overflow_of_opposite_extreme_means_is_an_error() {
    let x = [
        1.7e308f64, 1.7e308, -1.7e308, -1.7e308, 1.7e308, 1.7e308, 1.0, 2.0,
    ];
    for scale in [Scale::Batch, Scale::BatchResidual] {
        for threads in 1..=4 {
            let p = Params {
                scale,
                threads,
                ..Params::default()
            };
            for got in run_all(&x, 2, &p) {
                match (scale, got) {
                    (Scale::Batch, Err(e)) => assert_eq!(e, AdvError::BatchOverflow),
                    // The residuals are small: a finite answer.
                    (Scale::BatchResidual, Ok(a)) => {
                        assert_eq!(&a[..6], &[0.0; 6]);
                        assert!(a[6] < 0.0 && a[7] > 0.0);
                    }
                    (s, r) => panic!("{s:?}: {r:?}"),
                }
            }
        }
    }
}

/// Issue 10: `batch_std` is a parameter of the core: d = batch_std + eps, and an advantage
/// that the output dtype cannot hold is the overflow error (f32 with 1e-300 gave +-inf).
#[test]
fn given_batch_std_scales_and_overflows_like_any_denominator() {
    let x = [0.0f64, 2.0, 10.0, 14.0];
    for scale in [Scale::Batch, Scale::BatchResidual] {
        let p = Params {
            scale,
            eps: 0.5,
            batch_std: Some(1.5),
            ..Params::default()
        };
        for got in run_all(&x, 2, &p) {
            assert_eq!(got.unwrap(), vec![-0.5, 0.5, -1.0, 1.0]);
        }
        let p = Params {
            scale,
            batch_std: Some(1e-300),
            ..Params::default()
        };
        let x32 = [0.0f32, 1.0, 3.0, 3.0];
        for got in run_all(&x32, 2, &p) {
            assert_eq!(got.unwrap_err(), AdvError::Overflow { group: 0 });
        }
        // Exact 0 for an all-equal group, whatever the batch std.
        let p = Params {
            scale,
            batch_std: Some(0.0),
            ..Params::default()
        };
        for got in run_all(&[3.0f32, 3.0, 1.0, 1.0], 2, &p) {
            assert_eq!(got.unwrap(), vec![0.0; 4]);
        }
    }
    for (scale, b) in [
        (Scale::Group, 1.0),
        (Scale::Batch, -1.0),
        (Scale::Batch, f64::INFINITY),
    ] {
        let p = Params {
            scale,
            batch_std: Some(b),
            ..Params::default()
        };
        let g = Grouping::uniform(4, 2).unwrap();
        assert!(
            matches!(run(&x, &g, &p), Err(AdvError::BadParameter(_))),
            "{scale:?} {b}"
        );
    }
    // NaN is an undefined batch std (e.g. the whole batch of a streamed file, poisoned under
    // Propagate): it scales to NaN as a computed one does, under every NaN policy
    for nonfinite in [NonFinite::Raise, NonFinite::Propagate, NonFinite::Omit] {
        let p = Params {
            scale: Scale::Batch,
            batch_std: Some(f64::NAN),
            nonfinite,
            ..Params::default()
        };
        for got in run_all(&x, 2, &p) {
            assert!(got.unwrap().iter().all(|v| v.is_nan()), "{nonfinite:?}");
        }
    }
}

/// Given moments (`advantages_with`) give what the rewards' own moments give, and the batch
/// scales merge them; weights are frequency weights.
#[test]
fn given_moments_match_computed_moments() {
    let x: Vec<f64> = (0..60)
        .map(|i| ((i * 37) % 17) as f64 * 0.25 - 1.0)
        .collect();
    let offsets: Vec<i64> = vec![0, 1, 7, 7, 20, 33, 60];
    let g = Grouping::ragged(60, &offsets).unwrap();
    for scale in [
        Scale::Group,
        Scale::Batch,
        Scale::BatchResidual,
        Scale::None,
    ] {
        for center in [Center::Mean, Center::LeaveOneOut] {
            let p = Params {
                scale,
                center,
                ddof: 1,
                eps: 1e-6,
                singleton: Singleton::Raw,
                ..Params::default()
            };
            let ms = group_moments(&x, &g, &p, None).unwrap();
            let want = run(&x, &g, &p).unwrap();
            let mut got = vec![0.0; 60];
            advantages_with(&x, &mut got, &g, &p, Some(&ms)).unwrap();
            for (a, b) in got.iter().zip(&want) {
                assert!(
                    (a - b).abs() <= 1e-12 * (1.0 + b.abs()),
                    "{p:?}: {a} vs {b}"
                );
            }
        }
    }
    // Moments of two halves of each group, merged, are the moments of the whole.
    let (first, second): (Vec<usize>, Vec<usize>) = (0..60).partition(|i| i % 2 == 0);
    let ids: Vec<i64> = g.codes().iter().map(|&c| c as i64).collect();
    let part = |idx: &[usize]| {
        // Every group present in both halves except the singleton and the empty one.
        let xs: Vec<f64> = idx.iter().map(|&i| x[i]).collect();
        let (gl, _) = Grouping::from_ids(&idx.iter().map(|&i| ids[i]).collect::<Vec<_>>()).unwrap();
        (
            group_moments(&xs, &gl, &Params::default(), None).unwrap(),
            idx.iter().map(|&i| ids[i]).collect::<Vec<_>>(),
        )
    };
    let whole = group_moments(&x, &g, &Params::default(), None).unwrap();
    let ((a, ia), (b, ib)) = (part(&first), part(&second));
    let mut merged = [Moments::EMPTY; 6];
    let mut seen = |ms: &[Moments], ids: &[i64]| {
        let mut order: Vec<i64> = Vec::new();
        for &i in ids {
            if !order.contains(&i) {
                order.push(i);
            }
        }
        for (m, &gid) in ms.iter().zip(&order) {
            merged[gid as usize] = merged[gid as usize].merge(*m);
        }
    };
    seen(&a, &ia);
    seen(&b, &ib);
    for (m, w) in merged.iter().zip(&whole) {
        assert_eq!(m.count, w.count);
        let close = (m.mean - w.mean).abs() < 1e-12 && (m.std(0) - w.std(0)).abs() < 1e-12;
        assert!(m.count == 0.0 || close, "{m:?} {w:?}");
    }
    // Frequency weights: weight 2 is the reward counted twice.
    let w: Vec<f64> = (0..60).map(|i| (i % 3) as f64).collect();
    let wm = group_moments(&x, &g, &Params::default(), Some(&w)).unwrap();
    let rep: Vec<f64> = (0..60)
        .flat_map(|i| std::iter::repeat_n(x[i], i % 3))
        .collect();
    let rep_offsets: Vec<i64> = offsets
        .iter()
        .map(|&o| (0..o as usize).map(|i| (i % 3) as i64).sum())
        .collect();
    let rg = Grouping::ragged(rep.len(), &rep_offsets).unwrap();
    let rm = group_moments(&rep, &rg, &Params::default(), None).unwrap();
    for (a, b) in wm.iter().zip(&rm) {
        assert_eq!(a.count, b.count);
        assert!(
            (a.mean - b.mean).abs() < 1e-12 && (a.m2 - b.m2).abs() < 1e-10,
            "{a:?} {b:?}"
        );
    }
    assert!(group_moments(&x, &g, &Params::default(), Some(&[-1.0; 60])).is_err());
    let mut out = vec![0.0; 60];
    assert!(advantages_with(&x, &mut out, &g, &Params::default(), Some(&whole[..3])).is_err());
}

/// A scaled batch std (rewards near 1e154: squares beyond f64) with singleton="raw": the
/// reward itself over the batch std, not re-centred on its own value (found by the Python
/// property test against numpy).
#[test]
fn raw_singletons_over_a_scaled_batch_std() {
    let mut x = [0.0f64; 9];
    x[8] = 1.4221127862163767e154;
    let p = Params {
        scale: Scale::Batch,
        singleton: Singleton::Raw,
        ..Params::default()
    };
    for got in run_all(&x, 1, &p) {
        let got = got.unwrap();
        assert_eq!(&got[..8], &[0.0; 8]);
        assert!((got[8] - 9.0 / 8f64.sqrt()).abs() < 1e-12, "{got:?}");
    }
}

/// Results are the same bits for every thread count 1..=8 (chunks claimed by whichever
/// thread is free): contiguous layouts, group and batch scales, advantages and moments.
#[test]
fn thread_counts_give_identical_bits() {
    let n = 3 * crate::parallel::SERIAL_BELOW + 64;
    let mut next = crate::kernel::xorshift(0x2545f4914f6cdd1d);
    let x: Vec<f32> = (0..n)
        .map(|_| next(1 << 20) as f32 / 4096.0 - 100.0)
        .collect();
    let mut offsets = vec![0i64];
    while (*offsets.last().unwrap() as usize) < n {
        let size = next(40) as i64;
        offsets.push((offsets.last().unwrap() + size).min(n as i64));
    }
    let layouts = [
        Grouping::uniform(n, 8).unwrap(),
        Grouping::uniform(n, 40).unwrap(),
        Grouping::ragged(n, &offsets).unwrap(),
    ];
    for g in &layouts {
        for (center, scale) in [
            (Center::Mean, Scale::Group),
            (Center::LeaveOneOut, Scale::Batch),
            (Center::Mean, Scale::BatchResidual),
        ] {
            let p = |threads| Params {
                center,
                scale,
                threads,
                ..Params::default()
            };
            let bits = |v: Vec<f32>| v.into_iter().map(f32::to_bits).collect::<Vec<_>>();
            let one = bits(run(&x, g, &p(1)).unwrap());
            let m1 = group_moments(&x, g, &p(1), None).unwrap();
            for threads in 2..=8 {
                assert_eq!(bits(run(&x, g, &p(threads)).unwrap()), one, "{threads}");
                assert_eq!(group_moments(&x, g, &p(threads), None).unwrap(), m1);
            }
        }
    }
}
