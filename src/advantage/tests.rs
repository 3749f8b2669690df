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
