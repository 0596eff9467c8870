/* Weight store drivers: the checked calls, a RAM store and a NOR flash
 * simulation with fault injection. docs/flash-store.md describes them. */
#include <string.h>

#include "kilolearn/kl_store.h"

/* ---- checked calls ------------------------------------------------------------- */

static int in_range(const kl_store_t *st, uint32_t off, uint32_t n)
{
	return off <= st->geom.size && n <= st->geom.size - off;
}

int kl_store_read(kl_store_t *st, uint32_t off, uint8_t *buf, uint32_t n)
{
	if (!in_range(st, off, n)) {
		return KL_EINVAL;
	}
	if (n == 0u) {
		return KL_OK;
	}
	return st->ops->read(st, off, buf, n);
}

int kl_store_program(kl_store_t *st, uint32_t off, const uint8_t *data, uint32_t n)
{
	const uint32_t wb = st->geom.write_block, eb = st->geom.erase_block;
	if (!in_range(st, off, n) || off % wb != 0u || n % wb != 0u) {
		return KL_EINVAL;
	}
	/* one driver call per sector, so that the wear lands on the right one */
	while (n > 0u) {
		const uint32_t sec = off / eb;
		uint32_t m = (sec + 1u) * eb - off;
		if (m > n) {
			m = n;
		}
		st->bytes_written += m;
		if (st->sector_bytes != NULL) {
			st->sector_bytes[sec] += m;
		}
		const int err = st->ops->program(st, off, data, m);
		if (err != KL_OK) {
			return err;
		}
		off += m;
		data += m;
		n -= m;
	}
	return KL_OK;
}

int kl_store_erase(kl_store_t *st, uint32_t off, uint32_t n)
{
	const uint32_t eb = st->geom.erase_block;
	if (!in_range(st, off, n) || off % eb != 0u || n % eb != 0u) {
		return KL_EINVAL;
	}
	for (; n > 0u; off += eb, n -= eb) {
		st->erases++;
		if (st->sector_erases != NULL) {
			st->sector_erases[off / eb]++;
		}
		const int err = st->ops->erase(st, off, eb);
		if (err != KL_OK) {
			return err;
		}
	}
	return KL_OK;
}

void kl_store_set_wear(kl_store_t *st, uint32_t *sector_erases, uint32_t *sector_bytes)
{
	st->sector_erases = sector_erases;
	st->sector_bytes = sector_bytes;
}

static int geom_ok(const kl_store_geom_t *g)
{
	const uint32_t wb = g->write_block;
	return wb != 0u && (wb & (wb - 1u)) == 0u && wb <= KL_STORE_MAX_WRITE_BLOCK &&
	       g->erase_block >= wb && g->erase_block % wb == 0u && g->size != 0u &&
	       g->size % g->erase_block == 0u && (g->erase_value == 0xFFu || g->erase_value == 0u);
}

/* ---- a part of another store ----------------------------------------------------- */

static int sub_read(kl_store_t *st, uint32_t off, uint8_t *buf, uint32_t n)
{
	kl_store_t *p = st->ctx;
	return kl_store_read(p, (uint32_t)(st->base_off + off), buf, n);
}

static int sub_program(kl_store_t *st, uint32_t off, const uint8_t *data, uint32_t n)
{
	kl_store_t *p = st->ctx;
	return kl_store_program(p, (uint32_t)(st->base_off + off), data, n);
}

static int sub_erase(kl_store_t *st, uint32_t off, uint32_t n)
{
	kl_store_t *p = st->ctx;
	return kl_store_erase(p, (uint32_t)(st->base_off + off), n);
}

static const kl_store_ops_t sub_ops = {sub_read, sub_program, sub_erase};

int kl_store_sub_init(kl_store_t *sub, kl_store_t *parent, uint32_t off, uint32_t size)
{
	const uint32_t eb = parent != NULL ? parent->geom.erase_block : 0u;
	if (sub == NULL || parent == NULL || eb == 0u || size == 0u || off % eb != 0u ||
	    size % eb != 0u || off > parent->geom.size || size > parent->geom.size - off) {
		return KL_EINVAL;
	}
	memset(sub, 0, sizeof(*sub));
	sub->ops = &sub_ops;
	sub->geom = parent->geom;
	sub->geom.size = size;
	sub->size = size;
	sub->base = parent->base != NULL ? parent->base + off : NULL;
	sub->ctx = parent;
	sub->base_off = off;
	return KL_OK;
}

/* ---- RAM ----------------------------------------------------------------------- */

static int ram_read(kl_store_t *st, uint32_t off, uint8_t *buf, uint32_t n)
{
	memcpy(buf, (const uint8_t *)st->ctx + off, n);
	return KL_OK;
}

static int ram_program(kl_store_t *st, uint32_t off, const uint8_t *data, uint32_t n)
{
	memcpy((uint8_t *)st->ctx + off, data, n);
	return KL_OK;
}

static int ram_erase(kl_store_t *st, uint32_t off, uint32_t n)
{
	memset((uint8_t *)st->ctx + off, st->geom.erase_value, n);
	return KL_OK;
}

static const kl_store_ops_t ram_ops = {ram_read, ram_program, ram_erase};

void kl_store_ram_init(kl_store_t *st, uint8_t *buf, uint32_t size)
{
	memset(st, 0, sizeof(*st));
	st->ops = &ram_ops;
	st->geom.erase_block = KL_STORE_RAM_SECTOR;
	st->geom.size = size - size % KL_STORE_RAM_SECTOR;
	st->geom.write_block = 1u;
	st->geom.erase_value = 0xFFu;
	st->size = st->geom.size;
	st->base = buf;
	st->ctx = buf;
}

/* ---- NOR simulation ------------------------------------------------------------ */

static uint32_t xorshift(uint32_t *s)
{
	uint32_t x = *s;
	x ^= x << 13;
	x ^= x >> 17;
	x ^= x << 5;
	*s = x;
	return x;
}

/* Account one step; KL_OK to do it fully, 1 to tear it, KL_EIO when dead. */
static int nor_step(kl_nor_sim_t *sim)
{
	if (sim->dead) {
		return KL_EIO;
	}
	sim->steps++;
	if (sim->cut_at != 0u && sim->steps == sim->cut_at) {
		sim->dead = 1;
		return sim->tear ? 1 : KL_EIO;
	}
	return KL_OK;
}

static void nor_changed(kl_nor_sim_t *sim, uint32_t off, uint32_t n)
{
	if (sim->on_change != NULL) {
		sim->on_change(sim->change_ctx, off, n);
	}
}

static int nor_read(kl_store_t *st, uint32_t off, uint8_t *buf, uint32_t n)
{
	const kl_nor_sim_t *sim = st->ctx;
	if (sim->dead) {
		return KL_EIO;
	}
	memcpy(buf, sim->mem + off, n);
	return KL_OK;
}

static int nor_program(kl_store_t *st, uint32_t off, const uint8_t *data, uint32_t n)
{
	kl_nor_sim_t *sim = st->ctx;
	const uint32_t wb = st->geom.write_block;
	const int ff = st->geom.erase_value == 0xFFu;
	int bad = 0, err = KL_OK;
	uint32_t i = 0;
	for (; i < n; i += wb) {
		const int torn = nor_step(sim);
		if (torn < 0) {
			err = torn;
			break;
		}
		uint8_t *cell = sim->mem + off + i;
		if (!torn && (wb & 3u) == 0u) { /* a word at a time, as a driver would */
			for (uint32_t j = 0; j < wb; j += 4u) {
				uint32_t c, d;
				memcpy(&c, cell + j, 4u);
				memcpy(&d, data + i + j, 4u);
				const uint32_t now = ff ? c & d : c | d;
				bad |= now != d;
				memcpy(cell + j, &now, 4u);
			}
			continue;
		}
		for (uint32_t j = 0; j < wb; j++) {
			/* bits that move away from the erase value; others stay */
			uint8_t want = data[i + j];
			if (torn) { /* a random part of the bits made it */
				const uint8_t keep = (uint8_t)xorshift(&sim->rng);
				want = ff ? (uint8_t)(want | keep) : (uint8_t)(want & keep);
			}
			const uint8_t now = ff ? (uint8_t)(cell[j] & want) : (uint8_t)(cell[j] | want);
			if (!torn && now != data[i + j]) {
				bad = 1; /* needed a bit back towards the erase value */
			}
			cell[j] = now;
		}
		if (torn) {
			i += wb;
			err = KL_EIO;
			break;
		}
	}
	if (i > 0u) {
		nor_changed(sim, off, i < n ? i : n);
	}
	if (err == KL_OK && bad) {
		sim->violations++;
		err = KL_EIO; /* the part reports a programming error */
	}
	return err;
}

static int nor_erase(kl_store_t *st, uint32_t off, uint32_t n)
{
	kl_nor_sim_t *sim = st->ctx;
	const int torn = nor_step(sim);
	if (torn < 0) {
		return torn;
	}
	uint8_t *cell = sim->mem + off;
	if (torn) { /* interrupted: some bytes erased, the rest as they were */
		for (uint32_t j = 0; j < n; j++) {
			if (xorshift(&sim->rng) & 1u) {
				cell[j] = st->geom.erase_value;
			}
		}
	} else {
		memset(cell, st->geom.erase_value, n);
	}
	nor_changed(sim, off, n);
	return torn ? KL_EIO : KL_OK;
}

static const kl_store_ops_t nor_ops = {nor_read, nor_program, nor_erase};

int kl_store_nor_init(kl_store_t *st, kl_nor_sim_t *sim, uint8_t *mem, const kl_store_geom_t *geom)
{
	if (st == NULL || sim == NULL || mem == NULL || geom == NULL || !geom_ok(geom)) {
		return KL_EINVAL;
	}
	memset(st, 0, sizeof(*st));
	memset(sim, 0, sizeof(*sim));
	sim->mem = mem;
	sim->rng = 0x2545F491u;
	st->ops = &nor_ops;
	st->geom = *geom;
	st->size = geom->size;
	st->base = mem;
	st->ctx = sim;
	return KL_OK;
}

void kl_store_nor_format(kl_store_t *st)
{
	kl_nor_sim_t *sim = st->ctx;
	memset(sim->mem, st->geom.erase_value, st->geom.size);
	nor_changed(sim, 0, st->geom.size);
}

void kl_store_nor_cut(kl_store_t *st, uint32_t k, uint32_t seed)
{
	kl_nor_sim_t *sim = st->ctx;
	sim->cut_at = k != 0u ? sim->steps + k : 0u;
	sim->tear = seed != 0u;
	sim->rng = seed != 0u ? seed : 0x2545F491u;
}

uint32_t kl_store_nor_steps(const kl_store_t *st)
{
	const kl_nor_sim_t *sim = st->ctx;
	return sim->steps;
}
