// Shared by the four example programs: npipes' v1 frame (docs/protocol.md), Microsoft's
// StreamString (npipes' framing="dotnet") and pipe names. C# 7.3, base library only:
// builds with the .NET SDK (the .csproj files) and with Mono's mcs (see ../README.md).
using System;
using System.IO;
using System.IO.Pipes;
using System.Security.Principal;
using System.Text;

/// <summary>An npipes error; Fatal: the connection is unusable afterwards.</summary>
sealed class NpipesException : IOException
{
    public bool Fatal { get; }

    public NpipesException(string error, string message, bool fatal)
        : base(error + ": " + message)
    {
        Fatal = fatal;
    }
}

/// <summary>CRC-32/ISO-HDLC (zlib's crc32); System.IO.Hashing.Crc32 gives the same value.</summary>
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

    public static uint Compute(byte[] data)
    {
        uint crc = 0xFFFFFFFFu;
        foreach (byte b in data) crc = Table[(crc ^ b) & 0xFF] ^ (crc >> 8);
        return crc ^ 0xFFFFFFFFu;
    }
}

/// <summary>The v1 frame: 16-byte header ("NP", version 1, flags, u32 reserved 0,
/// u64 payload length; little-endian), the payload, an optional u32 CRC-32 of it.</summary>
static class NpFrame
{
    public const byte FlagCrc = 0x01, FlagText = 0x02;
    public const long DefaultMaxMessageSize = 1L << 30; // 1 GiB, as npipes
    const long ArrayMax = 0x7FFFFFC7; // the largest byte[] .NET allocates

    // strict: throws on lone surrogates (sending) and on invalid UTF-8 (receiving); no BOM
    static readonly UTF8Encoding Utf8 = new UTF8Encoding(false, true);

    /// <summary>Sends a string as UTF-8 text, a byte[] as binary; with a CRC-32 when crc.
    /// corruptCrc: send a wrong CRC (to show what the receiver does; tests only).</summary>
    public static void Send(Stream stream, object message, bool crc, bool corruptCrc = false)
    {
        byte[] payload;
        byte flags = 0;
        string text = message as string;
        if (text != null) { payload = Utf8.GetBytes(text); flags = FlagText; }
        else payload = (byte[])message;
        if (crc) flags |= FlagCrc;

        var frame = new byte[16 + payload.Length + (crc ? 4 : 0)];
        frame[0] = (byte)'N';
        frame[1] = (byte)'P';
        frame[2] = 1; // version
        frame[3] = flags; // bytes 4..7: reserved, 0
        PutLittleEndian(frame, 8, (ulong)payload.Length, 8);
        Buffer.BlockCopy(payload, 0, frame, 16, payload.Length);
        if (crc) PutLittleEndian(frame, 16 + payload.Length, Crc32.Compute(payload) ^ (corruptCrc ? 1u : 0u), 4);
        stream.Write(frame, 0, frame.Length); // one write: the frame is contiguous
        stream.Flush();
    }

    /// <summary>Receives one message as docs/protocol.md 5.3 says: a string for a TEXT
    /// frame, a byte[] otherwise. requireCrc: npipes' crc=True.</summary>
    public static object Receive(Stream stream, bool requireCrc, long maxMessageSize = DefaultMaxMessageSize)
    {
        var header = new byte[16];
        int got = ReadFully(stream, header);
        if (got == 0) throw new NpipesException("ConnectionClosedError", "the peer closed the connection", true);
        if (got < 16) throw new NpipesException("IncompleteMessageError", "the stream ended inside a header", true);

        // validate in exactly this order; every failure here is fatal
        byte flags = header[3];
        if (header[0] != 0x4E || header[1] != 0x50) throw new NpipesException("ProtocolError", "bad magic", true);
        if (header[2] != 1) throw new NpipesException("ProtocolError", "unknown version " + header[2], true);
        if ((flags & 0xFC) != 0) throw new NpipesException("ProtocolError", "reserved flag bits in 0x" + flags.ToString("X2"), true);
        if (GetLittleEndian(header, 4, 4) != 0) throw new NpipesException("ProtocolError", "the reserved field is not 0", true);
        ulong length = GetLittleEndian(header, 8, 8);
        if (length > (ulong)Math.Min(maxMessageSize, ArrayMax)) // before allocating
            throw new NpipesException("MessageTooLargeError", length + " bytes", true);

        var payload = new byte[length];
        var trailer = new byte[4];
        if (ReadFully(stream, payload) < payload.Length || ((flags & FlagCrc) != 0 && ReadFully(stream, trailer) < 4))
            throw new NpipesException("IncompleteMessageError", "the stream ended inside a frame", true);

        // the whole frame is consumed: the errors below leave the connection usable
        if ((flags & FlagCrc) != 0)
        {
            if ((uint)GetLittleEndian(trailer, 0, 4) != Crc32.Compute(payload))
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

    static void PutLittleEndian(byte[] buffer, int offset, ulong value, int size)
    {
        for (int i = 0; i < size; i++) buffer[offset + i] = (byte)(value >> (8 * i));
    }

    static ulong GetLittleEndian(byte[] buffer, int offset, int size)
    {
        ulong value = 0;
        for (int i = size - 1; i >= 0; i--) value = (value << 8) | buffer[offset + i];
        return value;
    }

    // A pipe is a byte stream: a frame may arrive in any number of reads (on Windows a
    // read may also end inside a pipe message). Returns the count read (less than the
    // buffer's length only at the end of the stream).
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

/// <summary>Microsoft's StreamString ("How to: Use Named Pipes for Network Interprocess
/// Communication"): a 2-byte big-endian byte count, then the string in UTF-16LE. Two
/// fixes keep the same bytes on the wire: ReadString loops until it has the whole string
/// (the sample trusts one Read), and WriteString refuses a string over 65535 bytes (the
/// sample cuts it silently, sending a length that no longer matches what follows).</summary>
public class StreamString
{
    private readonly Stream ioStream;
    private readonly UnicodeEncoding streamEncoding = new UnicodeEncoding(false, false, true);

    public StreamString(Stream ioStream)
    {
        this.ioStream = ioStream;
    }

    /// <summary>The next string; null when the peer closed the connection between strings.</summary>
    public string ReadString()
    {
        int hi = ioStream.ReadByte();
        if (hi < 0) return null;
        int lo = ioStream.ReadByte();
        if (lo < 0) throw new EndOfStreamException("the stream ended inside a length");
        int len = hi * 256 + lo;
        byte[] inBuffer = new byte[len];
        for (int got = 0; got < len;)
        {
            int n = ioStream.Read(inBuffer, got, len - got);
            if (n == 0) throw new EndOfStreamException("the stream ended inside a string");
            got += n;
        }
        return streamEncoding.GetString(inBuffer);
    }

    public int WriteString(string outString)
    {
        byte[] outBuffer = streamEncoding.GetBytes(outString);
        int len = outBuffer.Length;
        if (len > UInt16.MaxValue)
            throw new ArgumentException(len + " bytes of UTF-16: at most " + UInt16.MaxValue + " fit a message");
        var frame = new byte[2 + len];
        frame[0] = (byte)(len / 256);
        frame[1] = (byte)(len & 255);
        Buffer.BlockCopy(outBuffer, 0, frame, 2, len);
        ioStream.Write(frame, 0, frame.Length);
        ioStream.Flush();
        return frame.Length;
    }
}

/// <summary>Opening pipes the same way in every example.</summary>
static class Pipes
{
    public static bool IsWindows { get { return Path.DirectorySeparatorChar == '\\'; } }

    /// <summary>"demo" and @"\\.\pipe\demo" name the same pipe: .NET wants the former.
    /// On Linux/macOS .NET makes it the Unix socket $TMPDIR/CoreFxPipe_demo (/tmp
    /// without TMPDIR); npipes reaches it with dotnet=True.</summary>
    public static string DotnetName(string name)
    {
        const string prefix = @"\\.\pipe\";
        return name.StartsWith(prefix, StringComparison.OrdinalIgnoreCase) ? name.Substring(prefix.Length) : name;
    }

    // CurrentUserOnly: a server admits only clients of our user, and a client talks only
    // to a server of our user (on Linux/macOS the socket lives in a shared directory
    // where another user could have created it first).
    public static NamedPipeServerStream Listen(string name)
    {
        return new NamedPipeServerStream(DotnetName(name), PipeDirection.InOut, 1,
            PipeTransmissionMode.Byte, PipeOptions.CurrentUserOnly);
    }

    public static NamedPipeClientStream Connect(string name, int timeoutMs)
    {
        // Windows: the server may learn who we are (Identification) but not act as us.
        var level = IsWindows ? TokenImpersonationLevel.Identification : TokenImpersonationLevel.None;
        var pipe = new NamedPipeClientStream(".", DotnetName(name), PipeDirection.InOut,
            PipeOptions.CurrentUserOnly, level);
        try
        {
            pipe.Connect(timeoutMs); // TimeoutException when nobody listens in time
        }
        catch
        {
            pipe.Dispose();
            throw;
        }
        return pipe;
    }

    /// <summary>Writes a line as UTF-8, whatever the console's code page.</summary>
    public static void PrintLine(Stream stdout, string line)
    {
        byte[] bytes = Encoding.UTF8.GetBytes(line + "\n");
        stdout.Write(bytes, 0, bytes.Length);
        stdout.Flush();
    }

    /// <summary>"hex:0001ff" is binary (bytes 00 01 ff); anything else is text.</summary>
    public static object ParseMessage(string arg)
    {
        if (!arg.StartsWith("hex:", StringComparison.Ordinal)) return arg;
        string hex = arg.Substring(4);
        if (hex.Length % 2 != 0) throw new FormatException("odd number of hex digits in " + arg);
        var data = new byte[hex.Length / 2];
        for (int i = 0; i < data.Length; i++) data[i] = Convert.ToByte(hex.Substring(2 * i, 2), 16);
        return data;
    }

    /// <summary>A received message as a line: the text, or "hex:" and the bytes.</summary>
    public static string Show(object message)
    {
        string text = message as string;
        if (text != null) return text;
        return "hex:" + BitConverter.ToString((byte[])message).Replace("-", "").ToLowerInvariant();
    }
}
