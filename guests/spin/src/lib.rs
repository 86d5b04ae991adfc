//! Hostile: never returns (the epoch deadline must stop it).
wit_bindgen::generate!({ path: "../../wit", world: "handler" });

struct Spin;

impl Guest for Spin {
    fn handle(_ctx: CallContext, input: Vec<u8>) -> Result<Vec<u8>, Error> {
        let mut x = input.len() as u64;
        loop {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
    }
}

export!(Spin);
