//! The cvm-agent: boot sequence, registration client, tunnel bring-up and keep-alive, port forwarding to
//! containers, local API.
