//! Hostile: allocates without bound (the memory cap must stop it).
wit_bindgen::generate!({ path: "../../wit", world: "handler" });

struct Hog;

impl Guest for Hog {
    fn handle(_ctx: CallContext, _input: Vec<u8>) -> Result<Vec<u8>, Error> {
        let mut hoard: Vec<Vec<u8>> = Vec::new();
        loop {
            hoard.push(vec![1u8; 1 << 20]);
            std::hint::black_box(&hoard);
        }
    }
}

export!(Hog);
