// An npipes client in C#, written from docs/protocol.md (frame format v1).
//
//   dotnet run -- NAME MESSAGE...         each MESSAGE as a text frame with a CRC-32;
//                                         prints each reply on a line
//   dotnet run -- NAME --binary-size N    one N-byte binary message (byte i = i % 251);
//                                         checks the reply byte for byte
//
// NAME: a pipe name ("demo" is \\.\pipe\demo on Windows). On Linux/macOS .NET's
// named pipes are Unix domain sockets: pass the absolute socket path npipes uses.
using System;
using System.Buffers.Binary;
using System.IO;
using System.IO.Pipes;
using System.Security.Principal;
using System.Text;

/// <summary>An npipes error; Fatal: the connection is unusable afterwards.</summary>
sealed class NpipesException : IOException
{
    public bool Fatal { get; }

    public NpipesException(string error, string message, bool fatal)
        : base($"{error}: {message}") => Fatal = fatal;
}

/// <summary>CRC-32/ISO-HDLC (zlib's crc32). System.IO.Hashing.Crc32.HashToUInt32
/// (NuGet package System.IO.Hashing) gives the same value.</summary>
static class Crc32
{
    static readonly uint[] Table = MakeTable();

    static uint[] MakeTable()
    {
        var table = new uint[256];
        for (uint n = 0; n < 256; n++)
        {
            uint c = n;
            for (int k = 0; k < 8; k++) c = (c & 1) != 0 ? (c >> 1) ^ 0xEDB88320u : c >> 1;
            table[n] = c;
        }
        return table;
    }

    public static uint Compute(ReadOnlySpan<byte> data)
    {
        uint crc = 0xFFFFFFFFu;
        foreach (byte b in data) crc = Table[(crc ^ b) & 0xFF] ^ (crc >> 8);
        return crc ^ 0xFFFFFFFFu;
    }
}

/// <summary>The v1 frame: 16-byte header ("NP", version 1, flags, u32 reserved 0,
/// u64 length; all little-endian), payload, optional u32 CRC-32 of the payload.</summary>
static class NpFrame
{
    public const byte FlagCrc = 0x01, FlagText = 0x02;
    public const ulong DefaultMaxMessageSize = 1UL << 30; // 1 GiB

    // strict: throws on lone surrogates (sending) and on invalid UTF-8 (receiving); no BOM
    static readonly UTF8Encoding Utf8 = new(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true);

    /// <summary>Sends a string as UTF-8 text, a byte[] as binary; with a CRC when crc.</summary>
    public static void Send(Stream stream, object message, bool crc)
    {
        byte[] payload;
        byte flags;
        if (message is string text) { payload = Utf8.GetBytes(text); flags = FlagText; }
        else { payload = (byte[])message; flags = 0; }
        if (crc) flags |= FlagCrc;

        var frame = new byte[16 + payload.Length + (crc ? 4 : 0)];
        frame[0] = (byte)'N';
        frame[1] = (byte)'P';
        frame[2] = 1; // version
        frame[3] = flags;
        BinaryPrimitives.WriteUInt32LittleEndian(frame.AsSpan(4, 4), 0); // reserved
        BinaryPrimitives.WriteUInt64LittleEndian(frame.AsSpan(8, 8), (ulong)payload.Length);
        payload.CopyTo(frame, 16);
        if (crc) BinaryPrimitives.WriteUInt32LittleEndian(frame.AsSpan(16 + payload.Length, 4), Crc32.Compute(payload));
        stream.Write(frame, 0, frame.Length); // one write: the frame is contiguous
        stream.Flush();
    }

    /// <summary>Receives one message, as docs/protocol.md 5.3 says: a string for a TEXT
    /// frame, a byte[] otherwise. requireCrc: npipes' crc=True.</summary>
    public static object Receive(Stream stream, bool requireCrc, ulong maxMessageSize = DefaultMaxMessageSize)
    {
        var header = new byte[16];
        int got = ReadFully(stream, header);
        if (got == 0) throw new NpipesException("ConnectionClosedError", "the peer closed the connection", true);
        if (got < 16) throw new NpipesException("IncompleteMessageError", "the stream ended inside a header", true);

        // validate in exactly this order; every failure here is fatal
        byte flags = header[3];
        if (header[0] != 0x4E || header[1] != 0x50) throw new NpipesException("ProtocolError", "bad magic", true);
        if (header[2] != 1) throw new NpipesException("ProtocolError", $"unknown version {header[2]}", true);
        if ((flags & 0xFC) != 0) throw new NpipesException("ProtocolError", $"reserved flag bits in 0x{flags:X2}", true);
        if (BinaryPrimitives.ReadUInt32LittleEndian(header.AsSpan(4, 4)) != 0)
            throw new NpipesException("ProtocolError", "the reserved field is not 0", true);
        ulong length = BinaryPrimitives.ReadUInt64LittleEndian(header.AsSpan(8, 8));
        if (length > maxMessageSize || length > (ulong)Array.MaxLength) // before allocating
            throw new NpipesException("MessageTooLargeError", $"{length} bytes", true);

        var payload = new byte[length];
        var trailer = new byte[4];
        if (ReadFully(stream, payload) < payload.Length || ((flags & FlagCrc) != 0 && ReadFully(stream, trailer) < 4))
            throw new NpipesException("IncompleteMessageError", "the stream ended inside a frame", true);

        // the whole frame is consumed: the errors below leave the connection usable
        if ((flags & FlagCrc) != 0)
        {
            if (BinaryPrimitives.ReadUInt32LittleEndian(trailer) != Crc32.Compute(payload))
                throw new NpipesException("ChecksumError", "CRC-32 mismatch", false);
        }
        else if (requireCrc)
        {
            throw new NpipesException("ChecksumError", "the frame has no CRC", false);
        }
        if ((flags & FlagText) == 0) return payload;
        try { return Utf8.GetString(payload); }
        catch (DecoderFallbackException) { throw new NpipesException("ProtocolError", "text that is not UTF-8", false); }
    }

    // A pipe is a byte stream: a frame may arrive in any number of reads (in message
    // mode a read may also end inside a pipe message). Returns the count read (< buffer
    // length only at the end of the stream).
    static int ReadFully(Stream stream, byte[] buffer)
    {
        int total = 0;
        while (total < buffer.Length)
        {
            int n = stream.Read(buffer, total, buffer.Length - total);
            if (n == 0) break;
            total += n;
        }
        return total;
    }
}

static class Program
{
    static int Main(string[] args)
    {
        if (args.Length < 2 || (args[1] == "--binary-size" && args.Length != 3))
        {
            Console.Error.WriteLine("usage: NpipesClient NAME MESSAGE...\n       NpipesClient NAME --binary-size N");
            return 2;
        }
        string name = args[0].StartsWith(@"\\.\pipe\", StringComparison.OrdinalIgnoreCase) ? args[0][9..] : args[0];
        try
        {
            // Windows: the server may learn who we are (Identification) but not act as us.
            var level = OperatingSystem.IsWindows() ? TokenImpersonationLevel.Identification : TokenImpersonationLevel.None;
            using var pipe = new NamedPipeClientStream(".", name, PipeDirection.InOut, PipeOptions.None, level);
            pipe.Connect(5000); // TimeoutException when nobody listens within 5 s
            if (args[1] == "--binary-size")
            {
                var data = new byte[int.Parse(args[2])];
                for (int i = 0; i < data.Length; i++) data[i] = (byte)(i % 251);
                NpFrame.Send(pipe, data, crc: true);
                if (NpFrame.Receive(pipe, requireCrc: true) is not byte[] echo || !echo.AsSpan().SequenceEqual(data.AsSpan()))
                {
                    Console.Error.WriteLine("NpipesClient: the reply differs from what was sent");
                    return 1;
                }
                Console.WriteLine($"ok: {data.Length} bytes");
                return 0;
            }
            using var stdout = Console.OpenStandardOutput();
            foreach (string message in args[1..])
            {
                NpFrame.Send(pipe, message, crc: true);
                object reply = NpFrame.Receive(pipe, requireCrc: true);
                string line = reply is string text ? text : "binary:" + Convert.ToHexString((byte[])reply).ToLowerInvariant();
                byte[] bytes = Encoding.UTF8.GetBytes(line + "\n"); // UTF-8 whatever the console code page
                stdout.Write(bytes, 0, bytes.Length);
            }
            return 0;
        }
        catch (Exception e) when (e is IOException or TimeoutException or UnauthorizedAccessException or ArgumentException or FormatException)
        {
            Console.Error.WriteLine($"NpipesClient: {e.Message}");
            return 1;
        }
    }
}
