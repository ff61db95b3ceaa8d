"""Operations: generators of shell commands, decided by pure functions over facts."""
