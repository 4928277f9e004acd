//! The numeric operators of expressions (`filter`): arithmetic (op codes 20 to 31), integer
//! bit operators (32 to 41), min and max (50, 51), on values already evaluated. An operand
//! of the wrong type, a mix of integers and floats, an integer overflow or a shift out of
//! range gives no value (None), which the evaluator reads as unknown, as Aerospike does.
//!
//! Pure; cost: one pass over the operands.

use super::msgpack::Value;

/// The value of numeric operator `op` on `operands`; None if it has none.
pub fn apply(op: i64, operands: &[Value]) -> Option<Value> {
    match op {
        20..=24 | 26 => fold(op, operands),
        25 => match operands {
            [Value::F64(x), Value::F64(base)] => Some(Value::F64(x.ln() / base.ln())),
            _ => None,
        },
        27 => match operands {
            [Value::Int(i)] => i.checked_abs().map(Value::Int),
            [Value::F64(x)] => Some(Value::F64(x.abs())),
            _ => None,
        },
        28 | 29 => match operands {
            [Value::F64(x)] => Some(Value::F64(if op == 28 { x.floor() } else { x.ceil() })),
            _ => None,
        },
        30 => match operands {
            [Value::F64(x)] if x.is_finite() && x.abs() < i64::MAX as f64 => Some(Value::Int(*x as i64)),
            _ => None,
        },
        31 => match operands {
            [Value::Int(i)] => Some(Value::F64(*i as f64)),
            _ => None,
        },
        40 | 41 => match operands {
            [Value::Int(v), Value::Bool(search)] => integer_bits(op, &[*v, *search as i64]),
            _ => None,
        },
        32..=39 => integer_bits(op, &ints(operands)?),
        50 | 51 => extreme(op == 51, operands),
        _ => None,
    }
}

fn ints(operands: &[Value]) -> Option<Vec<i64>> {
    operands.iter().map(|v| if let Value::Int(i) = v { Some(*i) } else { None }).collect()
}

/// Add, subtract, multiply, divide, power and modulo, left to right.
fn fold(op: i64, operands: &[Value]) -> Option<Value> {
    let (first, rest) = operands.split_first()?;
    let mut acc = first.clone();
    for next in rest {
        acc = match (&acc, next) {
            (Value::Int(a), Value::Int(b)) => Value::Int(match op {
                20 => a.checked_add(*b)?,
                21 => a.checked_sub(*b)?,
                22 => a.checked_mul(*b)?,
                23 => a.checked_div(*b)?,
                24 => a.checked_pow(u32::try_from(*b).ok()?)?,
                _ => a.checked_rem(*b)?,
            }),
            (Value::F64(a), Value::F64(b)) => Value::F64(match op {
                20 => a + b,
                21 => a - b,
                22 => a * b,
                23 => a / b,
                24 => a.powf(*b),
                _ => a % b,
            }),
            // Mixed integer and float is an error in Aerospike's expressions too.
            _ => return None,
        };
    }
    matches!(acc, Value::Int(_) | Value::F64(_)).then_some(acc)
}

/// The integer bit operators; bit positions count from the most significant bit (0).
fn integer_bits(op: i64, operands: &[i64]) -> Option<Value> {
    let shift = |s: i64| u32::try_from(s).ok().filter(|s| *s < 64);
    let value = match (op, operands) {
        (32, [first, rest @ ..]) => rest.iter().fold(*first, |a, b| a & b),
        (33, [first, rest @ ..]) => rest.iter().fold(*first, |a, b| a | b),
        (34, [first, rest @ ..]) => rest.iter().fold(*first, |a, b| a ^ b),
        (35, [v]) => !v,
        (36, [v, s]) => v << shift(*s)?,
        (37, [v, s]) => ((*v as u64) >> shift(*s)?) as i64,
        (38, [v, s]) => v >> shift(*s)?,
        (39, [v]) => v.count_ones() as i64,
        (40, [v, search]) => {
            let bits = if *search != 0 { *v as u64 } else { !*v as u64 };
            if bits == 0 {
                -1
            } else {
                bits.leading_zeros() as i64
            }
        }
        (41, [v, search]) => {
            let bits = if *search != 0 { *v as u64 } else { !*v as u64 };
            if bits == 0 {
                -1
            } else {
                63 - bits.trailing_zeros() as i64
            }
        }
        _ => return None,
    };
    Some(Value::Int(value))
}

/// The largest (`max`) or smallest operand, all integers or all floats.
fn extreme(max: bool, operands: &[Value]) -> Option<Value> {
    if let Some(ints) = ints(operands) {
        let found = if max { ints.into_iter().max() } else { ints.into_iter().min() };
        return found.map(Value::Int);
    }
    let floats: Option<Vec<f64>> =
        operands.iter().map(|v| if let Value::F64(x) = v { Some(*x) } else { None }).collect();
    let floats = floats.filter(|f| !f.is_empty())?;
    let pick = |a: f64, b: f64| if (b > a) == max { b } else { a };
    Some(Value::F64(floats.into_iter().reduce(pick)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn int(i: i64) -> Value {
        Value::Int(i)
    }

    #[test]
    fn arithmetic_and_integer_bit_operators_answer_as_aerospike_defines_them() {
        assert_eq!(apply(20, &[int(2), int(3), int(4)]), Some(int(9)));
        assert_eq!(apply(20, &[int(i64::MAX), int(1)]), None, "overflow is unknown");
        assert_eq!(apply(20, &[int(1), Value::F64(1.0)]), None, "no mixing");
        assert_eq!(apply(25, &[Value::F64(8.0), Value::F64(2.0)]), Some(Value::F64(3.0)));
        assert_eq!(apply(28, &[Value::F64(-1.5)]), Some(Value::F64(-2.0)));
        assert_eq!(apply(29, &[Value::F64(1.25)]), Some(Value::F64(2.0)));
        assert_eq!(apply(30, &[Value::F64(-7.9)]), Some(int(-7)));
        assert_eq!(apply(31, &[int(3)]), Some(Value::F64(3.0)));
        assert_eq!(apply(32, &[int(0b1100), int(0b1010)]), Some(int(0b1000)));
        assert_eq!(apply(33, &[int(0b1100), int(0b1010)]), Some(int(0b1110)));
        assert_eq!(apply(34, &[int(0b1100), int(0b1010)]), Some(int(0b0110)));
        assert_eq!(apply(35, &[int(0)]), Some(int(-1)));
        assert_eq!(apply(36, &[int(1), int(4)]), Some(int(16)));
        assert_eq!(apply(36, &[int(1), int(64)]), None);
        assert_eq!(apply(37, &[int(-1), int(60)]), Some(int(15)));
        assert_eq!(apply(38, &[int(-16), int(2)]), Some(int(-4)));
        assert_eq!(apply(39, &[int(0b1011)]), Some(int(3)));
        let (yes, no) = (Value::Bool(true), Value::Bool(false));
        assert_eq!(apply(40, &[int(1), yes.clone()]), Some(int(63)));
        assert_eq!(apply(40, &[int(-1), no]), Some(int(-1)));
        assert_eq!(apply(41, &[int(0b110), yes.clone()]), Some(int(62)));
        assert_eq!(apply(41, &[int(i64::MIN), yes]), Some(int(0)));
        assert_eq!(apply(50, &[int(3), int(-2), int(9)]), Some(int(-2)));
        assert_eq!(apply(51, &[Value::F64(1.5), Value::F64(-2.0)]), Some(Value::F64(1.5)));
        assert_eq!(apply(51, &[int(1), Value::F64(2.0)]), None);
    }
}
