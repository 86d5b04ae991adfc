//! `counter`: keeps named counters in the `counters` collection (type t.Msg:
//! `text` is the name, `n` the value). Methods: Incr (add 1, return the new
//! value), Peek (read), Sneak (tries to open `secret`, which it is not granted),
//! IncrThenFail and IncrThenTrap (increment, then fail: nothing may stay),
//! IncrTwice (calls Incr twice through `invoke`, as another method would),
//! IncrSlowly (waits `n` milliseconds, then increments: a long call to
//! interrupt in tests), PeekTen (sums counters `text`0 … `text`9: ten reads,
//! for the benchmark), Calls (how many calls this instance has served: always
//! 1, since every call gets a fresh instance; it needs no collection), Bulk
//! (buffers `n` 1 MiB creates), Hold (holds `n` MiB for half a second),
//! Both (increments in `counters` and `other`, then waits `n` ms).
wit_bindgen::generate!({ path: "../../wit", world: "handler" });

use collector::runtime::collections::Collection;
use prost::Message;

#[derive(Clone, PartialEq, prost::Message)]
struct Msg {
    #[prost(string, tag = "1")]
    text: String,
    #[prost(int64, tag = "2")]
    n: i64,
}

struct Counter;

fn incr(name: &str) -> Result<Msg, Error> {
    let counters = Collection::open("counters")?;
    match counters.get(name) {
        Ok(rec) => {
            let cur = decode(&rec.data)?;
            let next = Msg { text: name.to_string(), n: cur.n + 1 };
            counters.update(name, &next.encode_to_vec(), &rec.labels, Some(rec.version))?;
            Ok(next)
        }
        Err(Error::NotFound(_)) => {
            let first = Msg { text: name.to_string(), n: 1 };
            counters.create(name, &first.encode_to_vec(), &[])?;
            Ok(first)
        }
        Err(e) => Err(e),
    }
}

fn decode(input: &[u8]) -> Result<Msg, Error> {
    Msg::decode(input).map_err(|e| Error::InvalidArgument(format!("input is not a t.Msg: {e}")))
}

impl Guest for Counter {
    fn handle(ctx: CallContext, input: Vec<u8>) -> Result<Vec<u8>, Error> {
        let req = decode(&input)?;
        if req.text.is_empty() {
            return Err(Error::InvalidArgument("text names the counter; it is empty".into()));
        }
        match ctx.method.as_str() {
            "Incr" => Ok(incr(&req.text)?.encode_to_vec()),
            "IncrTwice" => {
                collector::runtime::invoke::call(&ctx.service, "Incr", &input)?;
                collector::runtime::invoke::call(&ctx.service, "Incr", &input)
            }
            "IncrSlowly" => {
                std::thread::sleep(std::time::Duration::from_millis(req.n.max(0) as u64));
                Ok(incr(&req.text)?.encode_to_vec())
            }
            "PeekTen" => {
                let counters = Collection::open("counters")?;
                let mut sum = 0;
                for i in 0..10 {
                    sum += decode(&counters.get(&format!("{}{i}", req.text))?.data)?.n;
                }
                Ok(Msg { text: req.text, n: sum }.encode_to_vec())
            }
            "IncrThenFail" => {
                incr(&req.text)?;
                Err(Error::Internal("changed my mind after writing".into()))
            }
            "IncrThenTrap" => {
                incr(&req.text)?;
                panic!("trap after writing");
            }
            "Peek" => {
                let counters = Collection::open("counters")?;
                match counters.get(&req.text) {
                    Ok(rec) => Ok(rec.data),
                    Err(Error::NotFound(_)) => Ok(Msg { text: req.text, n: 0 }.encode_to_vec()),
                    Err(e) => Err(e),
                }
            }
            "Calls" => {
                static CALLS: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);
                let n = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                Ok(Msg { text: req.text, n }.encode_to_vec())
            }
            "Bulk" => {
                // Buffers `n` creates of 1 MiB each (ids `text`0, `text`1, …):
                // the writes count against the call's memory cap.
                let counters = Collection::open("counters")?;
                let big = Msg { text: "x".repeat(1 << 20), n: 0 }.encode_to_vec();
                for i in 0..req.n {
                    counters.create(&format!("{}{i}", req.text), &big, &[])?;
                }
                Ok(Msg { text: req.text, n: req.n }.encode_to_vec())
            }
            "Both" => {
                // Increments `text` in `counters` and in `other`, then waits
                // `n` ms: two collections' commits, to break in between.
                let first = incr(&req.text)?;
                let other = Collection::open("other")?;
                match other.get(&req.text) {
                    Ok(rec) => {
                        let n = decode(&rec.data)?.n + 1;
                        let next = Msg { text: req.text.clone(), n }.encode_to_vec();
                        other.update(&req.text, &next, &[], Some(rec.version))?;
                    }
                    Err(Error::NotFound(_)) => {
                        let next = Msg { text: req.text.clone(), n: 1 }.encode_to_vec();
                        other.create(&req.text, &next, &[])?;
                    }
                    Err(e) => return Err(e),
                }
                std::thread::sleep(std::time::Duration::from_millis(req.n.max(0) as u64));
                Ok(first.encode_to_vec())
            }
            "Hold" => {
                // Holds `n` MiB of linear memory for half a second.
                let held = vec![1u8; (req.n.max(0) as usize) << 20];
                std::thread::sleep(std::time::Duration::from_millis(500));
                Ok(Msg { text: req.text, n: std::hint::black_box(held).len() as i64 }.encode_to_vec())
            }
            "Sneak" => {
                let secret = Collection::open("secret")?;
                Ok(secret.get(&req.text)?.data)
            }
            other => Err(Error::InvalidArgument(format!("counter has no method {other}"))),
        }
    }
}

export!(Counter);
