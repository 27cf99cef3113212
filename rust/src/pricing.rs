//! Exact integer pricing and the `Usage` record.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

const PPM: u128 = 1_000_000;
/// "Unlimited" number of affordable tokens (output price 0).
pub const UNLIMITED_TOKENS: u128 = 1 << 62;

/// Prices of one model, with the account markup, in exact integer units.
#[pyclass(module = "tollway._core", frozen, get_all, eq, from_py_object)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Pricing {
    pub input_atto: u64,
    pub output_atto: u64,
    pub cache_read_atto: u64,
    pub cache_write_atto: u64,
    pub markup_ppm: u64,
}

/// Minimal little-endian 256-bit unsigned integer: enough for
/// sum(u64 tokens x u64 price) x (1e6 + u64 markup) without any overflow.
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
struct U256([u64; 4]);

impl U256 {
    fn add_u128(&mut self, v: u128, at: usize) {
        let mut carry = v;
        let mut i = at;
        while carry != 0 && i < 4 {
            let s = self.0[i] as u128 + (carry as u64) as u128;
            self.0[i] = s as u64;
            carry = (carry >> 64) + (s >> 64);
            i += 1;
        }
    }

    fn mul_u64(&self, m: u64) -> U256 {
        let mut out = U256::default();
        for i in 0..4 {
            out.add_u128(self.0[i] as u128 * m as u128, i);
        }
        out
    }

    fn add(&self, o: &U256) -> U256 {
        let mut out = *self;
        for i in 0..4 {
            out.add_u128(o.0[i] as u128, i);
        }
        out
    }

    fn divmod_u64(&self, d: u64) -> (U256, u64) {
        let mut q = U256::default();
        let mut r: u128 = 0;
        for i in (0..4).rev() {
            let cur = (r << 64) | self.0[i] as u128;
            q.0[i] = (cur / d as u128) as u64;
            r = cur % d as u128;
        }
        (q, r as u64)
    }

    fn to_u128(self) -> Option<u128> {
        if self.0[2] != 0 || self.0[3] != 0 {
            None
        } else {
            Some(self.0[0] as u128 | (self.0[1] as u128) << 64)
        }
    }
}

const MICRO_DIVISOR: u64 = 1_000_000_000_000_000_000; // 1e12 atto per micro x 1e6 ppm

/// The one settlement rule (streams and non-streams): what a call's hold of
/// `hold_micros` is settled to, given its priced usage. Usage the provider reported
/// is billed in full (even past the hold); an estimate (usage missing: a body
/// without it, a stream cut or left before it) never bills past the hold.
#[pyfunction]
pub fn settled_cost(priced_micros: i64, estimated: bool, hold_micros: i64) -> i64 {
    if estimated {
        priced_micros.min(hold_micros.max(0))
    } else {
        priced_micros
    }
}

impl Pricing {
    /// (floor(sum x (1e6 + markup) / 1e18), remainder): exact for all inputs.
    fn scaled(&self, input: u64, output: u64, cache_read: u64, cache_write: u64) -> (U256, u64) {
        let mut sum = U256::default();
        for (t, p) in [
            (input, self.input_atto),
            (output, self.output_atto),
            (cache_read, self.cache_read_atto),
            (cache_write, self.cache_write_atto),
        ] {
            sum.add_u128(t as u128 * p as u128, 0);
        }
        let total = sum.mul_u64(PPM as u64).add(&sum.mul_u64(self.markup_ppm));
        total.divmod_u64(MICRO_DIVISOR)
    }

    fn cost_wide(&self, input: u64, output: u64, cache_read: u64, cache_write: u64, ceil: bool) -> U256 {
        let (mut q, r) = self.scaled(input, output, cache_read, cache_write);
        let up = if ceil { r > 0 } else { r as u128 * 2 >= MICRO_DIVISOR as u128 };
        if up {
            q.add_u128(1, 0);
        }
        q
    }

    /// Cost rounded half-up to micros (None only above 2**128 micros).
    pub fn cost(&self, input: u64, output: u64, cache_read: u64, cache_write: u64) -> Option<u128> {
        self.cost_wide(input, output, cache_read, cache_write, false).to_u128()
    }

    /// Cost rounded up to micros.
    pub fn cost_ceil(&self, input: u64, output: u64, cache_read: u64, cache_write: u64) -> Option<u128> {
        self.cost_wide(input, output, cache_read, cache_write, true).to_u128()
    }

    /// Cost of a usage record, saturating to i64::MAX (never fails).
    pub fn cost_of(&self, u: &Usage) -> i64 {
        let c = self.cost(
            u.input_tokens.max(0) as u64,
            u.output_tokens.max(0) as u64,
            u.cache_read_tokens.max(0) as u64,
            u.cache_write_tokens.max(0) as u64,
        );
        match c {
            Some(c) if c <= i64::MAX as u128 => c as i64,
            _ => i64::MAX,
        }
    }

    /// floor(budget x 1e18 / (output_atto x (1e6 + markup))); 2**62 when output is free.
    pub fn affordable(&self, budget_micros: i64) -> u128 {
        if budget_micros <= 0 {
            return 0;
        }
        if self.output_atto == 0 {
            return UNLIMITED_TOKENS;
        }
        let Some(per_token) = (self.output_atto as u128).checked_mul(PPM + self.markup_ppm as u128) else {
            return 0; // more than 2**128 / 1e18 micros per token
        };
        // budget < 2**63 and 1e18 < 2**60: the product fits in u128.
        (budget_micros as u128 * MICRO_DIVISOR as u128) / per_token
    }
}

/// A U256 as a Python int (exact, even above 2**128).
fn wide_to_py(py: Python<'_>, v: U256) -> PyResult<Bound<'_, PyAny>> {
    if let Some(x) = v.to_u128() {
        return Ok(x.into_pyobject(py)?.into_any());
    }
    let mut le = [0u8; 32];
    for (i, limb) in v.0.iter().enumerate() {
        le[i * 8..i * 8 + 8].copy_from_slice(&limb.to_le_bytes());
    }
    py.get_type::<pyo3::types::PyInt>().call_method1("from_bytes", (pyo3::types::PyBytes::new(py, &le), "little"))
}

#[pymethods]
impl Pricing {
    #[new]
    #[pyo3(signature = (input_atto, output_atto, cache_read_atto=0, cache_write_atto=0, markup_ppm=0))]
    fn py_new(
        input_atto: u64,
        output_atto: u64,
        cache_read_atto: u64,
        cache_write_atto: u64,
        markup_ppm: u64,
    ) -> Self {
        Pricing { input_atto, output_atto, cache_read_atto, cache_write_atto, markup_ppm }
    }

    /// sum(tokens x price) x (1e6 + markup_ppm) / 1e6, rounded half-up to micros.
    #[pyo3(signature = (input_tokens, output_tokens, cache_read_tokens=0, cache_write_tokens=0))]
    fn cost_micros<'py>(&self, py: Python<'py>, input_tokens: u64, output_tokens: u64, cache_read_tokens: u64, cache_write_tokens: u64) -> PyResult<Bound<'py, PyAny>> {
        wide_to_py(py, self.cost_wide(input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, false))
    }

    /// Same sum, rounded up (used for holds).
    #[pyo3(signature = (input_tokens, output_tokens, cache_read_tokens=0, cache_write_tokens=0))]
    fn cost_micros_ceil<'py>(&self, py: Python<'py>, input_tokens: u64, output_tokens: u64, cache_read_tokens: u64, cache_write_tokens: u64) -> PyResult<Bound<'py, PyAny>> {
        wide_to_py(py, self.cost_wide(input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, true))
    }

    /// Largest n with n x output price (with markup) <= budget; 2**62 when the output price is 0.
    fn affordable_output_tokens(&self, budget_micros: i64) -> u128 {
        self.affordable(budget_micros)
    }

    fn __repr__(&self) -> String {
        format!(
            "Pricing(input_atto={}, output_atto={}, cache_read_atto={}, cache_write_atto={}, markup_ppm={})",
            self.input_atto, self.output_atto, self.cache_read_atto, self.cache_write_atto, self.markup_ppm
        )
    }
}

/// Token counts of one request.
#[pyclass(module = "tollway._core", get_all, set_all, eq, from_py_object)]
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cache_read_tokens: i64,
    pub cache_write_tokens: i64,
    pub estimated: bool,
    pub model: Option<String>,
    pub finish_reason: Option<String>,
}

#[pymethods]
impl Usage {
    #[new]
    #[pyo3(signature = (input_tokens=0, output_tokens=0, cache_read_tokens=0, cache_write_tokens=0, estimated=false, model=None, finish_reason=None))]
    fn py_new(
        input_tokens: i64,
        output_tokens: i64,
        cache_read_tokens: i64,
        cache_write_tokens: i64,
        estimated: bool,
        model: Option<String>,
        finish_reason: Option<String>,
    ) -> PyResult<Self> {
        if input_tokens < 0 || output_tokens < 0 || cache_read_tokens < 0 || cache_write_tokens < 0 {
            return Err(PyValueError::new_err("token counts must be >= 0"));
        }
        Ok(Usage { input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, estimated, model, finish_reason })
    }

    pub fn __repr__(&self) -> String {
        format!(
            "Usage(input_tokens={}, output_tokens={}, cache_read_tokens={}, cache_write_tokens={}, estimated={}, model={}, finish_reason={})",
            self.input_tokens,
            self.output_tokens,
            self.cache_read_tokens,
            self.cache_write_tokens,
            if self.estimated { "True" } else { "False" },
            py_opt_str(&self.model),
            py_opt_str(&self.finish_reason),
        )
    }
}

fn py_opt_str(s: &Option<String>) -> String {
    match s {
        None => "None".to_string(),
        Some(s) => format!("{:?}", s),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding() {
        // $3/M input = 3e12 atto per token
        let p = Pricing { input_atto: 3_000_000_000_000, output_atto: 15_000_000_000_000, ..Default::default() };
        assert_eq!(p.cost(1, 0, 0, 0), Some(3));
        assert_eq!(p.cost(1000, 1000, 0, 0), Some(18_000));
        let q = Pricing { input_atto: 500_000_000_000, ..Default::default() }; // 0.5 micro per token
        assert_eq!(q.cost(1, 0, 0, 0), Some(1)); // half-up
        assert_eq!(q.cost_ceil(1, 0, 0, 0), Some(1));
        let r = Pricing { input_atto: 400_000_000_000, ..Default::default() };
        assert_eq!(r.cost(1, 0, 0, 0), Some(0));
        assert_eq!(r.cost_ceil(1, 0, 0, 0), Some(1));
        let r2 = Pricing { output_atto: 400_000_000_000, ..Default::default() };
        assert_eq!(r2.affordable(1), 2);
        assert_eq!(r2.affordable(0), 0);
        assert_eq!(Pricing::default().affordable(5), UNLIMITED_TOKENS);
        let m = Pricing { output_atto: 1_000_000_000_000, markup_ppm: 100_000, ..Default::default() };
        assert_eq!(m.affordable(11), 10);
        assert_eq!(m.affordable(10), 9);
    }
}
