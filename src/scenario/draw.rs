//! Random draws from a caller's generator: uniform, standard normal (Box–Muller), exponential
//! and log-normal (also given by its median and 99th percentile). Telemetry generators and
//! schedules draw from each device's seeded generator, delays ([`super::delay`]) from the
//! device's own; one formula each, so a distribution means the same wherever a scenario uses it.

use rand::Rng;

/// z of the standard normal's 99th percentile.
pub const Z99: f64 = 2.326_347_874_040_841;

/// Uniform in [0, 1).
pub fn unit<R: Rng + ?Sized>(rng: &mut R) -> f64 {
    rng.random::<f64>()
}

/// Uniform in [min, max).
pub fn uniform<R: Rng + ?Sized>(rng: &mut R, min: f64, max: f64) -> f64 {
    min + (max - min) * unit(rng)
}

/// A standard normal draw (mean 0, deviation 1).
pub fn normal<R: Rng + ?Sized>(rng: &mut R) -> f64 {
    // Box–Muller with u1 in (0, 1], so the logarithm is finite.
    let u1 = 1.0 - unit(rng);
    let u2 = unit(rng);
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// An exponential draw with mean `mean`.
pub fn exponential<R: Rng + ?Sized>(rng: &mut R, mean: f64) -> f64 {
    -(1.0 - unit(rng)).ln() * mean
}

/// A log-normal draw: e^(μ + σZ).
pub fn lognormal<R: Rng + ?Sized>(rng: &mut R, mu: f64, sigma: f64) -> f64 {
    (mu + sigma * normal(rng)).exp()
}

/// μ and σ of the log-normal whose median is `p50` and 99th percentile `p99` (both above 0).
pub fn lognormal_parameters(p50: f64, p99: f64) -> (f64, f64) {
    let mu = p50.ln();
    (mu, (p99.ln() - mu) / Z99)
}

/// The mean and the (sample) standard deviation of `xs`, for tests of distributions.
#[cfg(test)]
pub fn mean_and_deviation(xs: &[f64]) -> (f64, f64) {
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, var.sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::SmallRng;

    #[test]
    fn draws_have_their_distributions() {
        let mut rng = SmallRng::seed_from_u64(1);
        let n = 200_000;
        let normals: Vec<f64> = (0..n).map(|_| normal(&mut rng)).collect();
        let (m, s) = mean_and_deviation(&normals);
        assert!(m.abs() < 0.01 && (s - 1.0).abs() < 0.01, "normal {m} {s}");
        // About 68.3% within one deviation.
        let within = normals.iter().filter(|z| z.abs() < 1.0).count() as f64 / n as f64;
        assert!((within - 0.6827).abs() < 0.005, "{within}");

        let exps: Vec<f64> = (0..n).map(|_| exponential(&mut rng, 2.0)).collect();
        let (m, s) = mean_and_deviation(&exps);
        assert!(
            (m - 2.0).abs() < 0.03 && (s - 2.0).abs() < 0.05,
            "exp {m} {s}"
        );

        let mut logs: Vec<f64> = (0..n).map(|_| lognormal(&mut rng, 0.0, 1.0)).collect();
        logs.sort_by(f64::total_cmp);
        let median = logs[n / 2];
        assert!((median - 1.0).abs() < 0.02, "lognormal median {median}");
    }
}
