//! Hostile: unbounded recursion (the wasm stack limit must stop it).
wit_bindgen::generate!({ path: "../../wit", world: "handler" });

struct Deep;

#[inline(never)]
#[allow(unconditional_recursion)] // the point of this guest
fn down(n: u64, pad: &mut [u8; 256]) -> u64 {
    pad[(n % 256) as usize] = n as u8;
    std::hint::black_box(down(n + 1, &mut [pad[0]; 256])) + pad[1] as u64
}

impl Guest for Deep {
    fn handle(_ctx: CallContext, _input: Vec<u8>) -> Result<Vec<u8>, Error> {
        Ok(down(0, &mut [0; 256]).to_le_bytes().to_vec())
    }
}

export!(Deep);
